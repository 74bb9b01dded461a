//! Pods' way out of the node: what a pod sends beyond its node leaves with the node's address
//! (source NAT, the kernel's masquerade), so a container reaches a broker on the site's LAN or
//! an API in the cloud as K3s' flannel lets it. Shoal keeps this in one nftables table of its
//! own per pod bridge (`table ip shoal-BRIDGE`), written whole in one `nft` transaction, and
//! switches on IPv4 forwarding, which a pod's packets to the outside need, keeping what it was
//! so that `shoal reset` can put it back. Nothing else on the host is touched: no iptables
//! rules, no other table.

use crate::error::{Error, Result};
use crate::oci::netns::Subnet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";

/// The name of Shoal's table for the pods of `bridge`.
pub fn table(bridge: &str) -> String {
    format!("shoal-{bridge}")
}

/// The table, as `nft -f` reads it: pods' packets from `subnet` that leave by any interface
/// but their bridge and the node's TUN device (other nodes' pods, reached with no NAT) take
/// the address of the interface they leave by; TCP connections through the TUN device have
/// their segments clamped to its MTU, so they never need fragments.
pub fn ruleset(bridge: &str, subnet: Subnet) -> String {
    let t = table(bridge);
    let tun = crate::oci::tun::name_for(bridge);
    // Declared, then deleted, then written: one transaction that replaces whatever was there.
    format!(
        "table ip {t} {{}}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != {{ \"{bridge}\", \"{tun}\" }} masquerade\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority mangle; policy accept;\n\
         \t\toifname \"{tun}\" tcp flags syn tcp option maxseg size set rt mtu\n\
         \t}}\n\
         }}\n"
    )
}

/// Runs `nft -f -` with `script`; nft's stderr becomes the error.
fn nft(script: &str) -> std::result::Result<(), String> {
    nft_in(None, script)
}

/// Runs `nft -f -` with `script` in network namespace `netns` (a name `ip netns` knows), or
/// in the agent's own.
pub fn nft_in(netns: Option<&str>, script: &str) -> std::result::Result<(), String> {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nft"]);
            c
        }
        None => Command::new("nft"),
    };
    let mut child = command
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e} (install Debian's nftables)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Switches forwarding on, first keeping in `state_dir/ip_forward` what it was (once: a
/// restarted agent finds it on already), then writes Shoal's table for `bridge`.
pub fn ensure(bridge: &str, subnet: Subnet, state_dir: &Path) -> Result<()> {
    let failed = |m: String| Error::Start {
        id: bridge.to_string(),
        message: format!("pods' outbound NAT: {m}"),
    };
    let now =
        std::fs::read_to_string(FORWARDING).map_err(|e| Error::io(Path::new(FORWARDING), e))?;
    if now.trim() != "1" {
        let kept = state_dir.join("ip_forward");
        if !kept.exists() {
            std::fs::write(&kept, now.trim()).map_err(|e| Error::io(&kept, e))?;
        }
        std::fs::write(FORWARDING, "1").map_err(|e| Error::io(Path::new(FORWARDING), e))?;
        tracing::info!("IPv4 forwarding switched on, for pods' traffic beyond the node");
    }
    // Forwarding first: pods reach other nodes' pods also without Debian's nft.
    nft(&ruleset(bridge, subnet)).map_err(failed)
}

/// Removes Shoal's table for `bridge` and puts forwarding back as it was before Shoal
/// switched it on. Returns whether there was a table.
pub fn remove(bridge: &str, state_dir: &Path) -> Result<bool> {
    let t = table(bridge);
    let had = Command::new("nft")
        .args(["list", "table", "ip", &t])
        .output()
        .is_ok_and(|o| o.status.success());
    if had {
        nft(&format!("delete table ip {t}\n")).map_err(|m| Error::Start {
            id: bridge.to_string(),
            message: format!("removing the nftables table {t}: {m}"),
        })?;
    }
    let kept = state_dir.join("ip_forward");
    if let Ok(was) = std::fs::read_to_string(&kept) {
        std::fs::write(FORWARDING, was.trim()).map_err(|e| Error::io(Path::new(FORWARDING), e))?;
        std::fs::remove_file(&kept).map_err(|e| Error::io(&kept, e))?;
    }
    Ok(had)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_masquerades_only_what_pods_send_beyond_the_cluster_and_clamps_segments_to_the_tun()
    {
        let subnet: Subnet = "10.42.3.0/24".parse().expect("subnet");
        let rules = ruleset("shoal0", subnet);
        assert!(rules.starts_with("table ip shoal-shoal0 {}\ndelete table ip shoal-shoal0\n"));
        assert!(
            rules.contains(
                "ip saddr 10.42.3.0/24 oifname != { \"shoal0\", \"shoal0-tun\" } masquerade"
            ),
            "{rules}"
        );
        assert!(
            rules
                .contains("oifname \"shoal0-tun\" tcp flags syn tcp option maxseg size set rt mtu"),
            "{rules}"
        );
        assert!(rules.contains("type nat hook postrouting priority srcnat"));
    }
}
