//! Host devices given to pods, in the shape of Kubernetes' device plugins: the node's admin
//! names them on the agent (`--device devices.shoal.dev/serial=/dev/ttyUSB0`), the node
//! advertises how many of each it has (those present now) as an extended resource, and a pod
//! that asks for `n` (`resources.limits: {devices.shoal.dev/serial: 1}`) gets `n` of them, its
//! own while it runs. A pod can name no device path itself.
//!
//! Which pod holds which device is a file in the pod's directory (`devices.json`): a restarted
//! agent gives a pod the same ones back, and a pod deleted while no agent ran frees its
//! devices with its directory.

use shoal_api::{Pod, Quantity};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One device the node offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The extended resource it counts under (`devices.shoal.dev/serial`).
    pub resource: String,
    /// The device node on the host.
    pub host: PathBuf,
    /// Where a container sees it, under `/dev` (the host path by default).
    pub container: String,
}

/// Parses `--device`: `RESOURCE=HOST_PATH[:CONTAINER_PATH]`, comma-separated or repeated.
pub fn parse(specs: &[String]) -> Result<Vec<DeviceConfig>, String> {
    let mut out: Vec<DeviceConfig> = Vec::new();
    for spec in specs
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((resource, paths)) = spec.split_once('=') else {
            return Err(format!(
                "expected RESOURCE=HOST_PATH[:CONTAINER_PATH], got {spec:?}"
            ));
        };
        if !shoal_api::validate::is_extended_resource(resource) {
            return Err(format!(
                "{resource:?} is not an extended resource name (devices.shoal.dev/serial)"
            ));
        }
        let (host, container) = match paths.split_once(':') {
            Some((h, c)) => (h, c.to_string()),
            None => (paths, paths.to_string()),
        };
        if !host.starts_with('/') {
            return Err(format!("{resource}: {host:?} is not an absolute path"));
        }
        let under_dev = container
            .strip_prefix("/dev/")
            .is_some_and(|rest| shoal_api::validate::check_relative_path(rest).is_ok());
        if !under_dev {
            return Err(format!(
                "{resource}: a container sees a device under /dev; {container:?} is not (give HOST_PATH:/dev/NAME)"
            ));
        }
        if let Some(twice) = out
            .iter()
            .find(|d| d.host == Path::new(host) || d.container == container)
        {
            return Err(format!(
                "{spec:?}: {} is already given as {}",
                twice.host.display(),
                twice.resource
            ));
        }
        out.push(DeviceConfig {
            resource: resource.to_string(),
            host: PathBuf::from(host),
            container,
        });
    }
    Ok(out)
}

/// The device node at `path` (symlinks followed, as `/dev/serial/by-id/...` are): its type,
/// numbers, mode and owner. Not a device: an error that says what it is.
pub fn device_node(path: &Path, container_path: &str) -> std::io::Result<shoal_runtime::Device> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path)?;
    let ft = meta.file_type();
    if !ft.is_char_device() && !ft.is_block_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a character or block device", path.display()),
        ));
    }
    let rdev = meta.rdev();
    Ok(shoal_runtime::Device {
        container_path: container_path.to_string(),
        block: ft.is_block_device(),
        major: rustix::fs::major(rdev).into(),
        minor: rustix::fs::minor(rdev).into(),
        file_mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// What the node advertises: each resource with as many units as it has devices present
/// now (a device unplugged stops counting, as a device plugin reports it unhealthy).
pub fn capacity(devices: &[DeviceConfig]) -> BTreeMap<String, Quantity> {
    let mut out: BTreeMap<String, i128> = BTreeMap::new();
    for d in devices {
        let present = device_node(&d.host, &d.container).is_ok();
        *out.entry(d.resource.clone()).or_default() += i128::from(present);
    }
    out.into_iter()
        .map(|(r, n)| (r, Quantity::from_milli(n * 1000)))
        .collect()
}

/// The device resources a pod asks for, as the scheduler counts them.
pub fn requests(pod: &Pod, devices: &[DeviceConfig]) -> BTreeMap<String, i128> {
    pod.spec
        .effective_requests(|c| container_requests(c, devices))
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn container_requests(c: &shoal_api::Container, devices: &[DeviceConfig]) -> Vec<(String, i128)> {
    let mut names: Vec<&String> = c
        .resources
        .requests
        .keys()
        .chain(c.resources.limits.keys())
        .filter(|r| devices.iter().any(|d| &d.resource == *r))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|r| Some((r.clone(), c.resources.request(r)?.value())))
        .collect()
}

/// The file in a pod's directory that says which devices it holds.
const HELD: &str = "devices.json";

/// The node's devices and which pods hold them.
pub struct Devices {
    devices: Vec<DeviceConfig>,
    pods_dir: PathBuf,
    /// Held while an allocation is decided and written.
    deciding: Mutex<()>,
}

/// A pod's devices, by resource: host paths, in the order its containers take them.
pub type Held = BTreeMap<String, Vec<PathBuf>>;

impl Devices {
    pub fn new(devices: Vec<DeviceConfig>, data_dir: &Path) -> Devices {
        Devices {
            devices,
            pods_dir: data_dir.join("pods"),
            deciding: Mutex::new(()),
        }
    }

    pub fn configured(&self) -> &[DeviceConfig] {
        &self.devices
    }

    /// The devices the pod `uid` gets: those it held (after an agent restart), else free ones.
    /// An error names what is short: the scheduler keeps such pods away, but a static pod, or
    /// a device unplugged since, can still come up short.
    pub fn allocate(&self, pod: &Pod) -> Result<Held, String> {
        let wants = requests(pod, &self.devices);
        if wants.is_empty() {
            return Ok(Held::new());
        }
        let _deciding = crate::sync::lock(&self.deciding);
        let uid = &pod.metadata.uid;
        let own = self.pods_dir.join(uid).join(HELD);
        if let Some(held) = read_held(&own).filter(|h| self.still_fits(h, &wants)) {
            return Ok(held);
        }
        let taken = self.taken_by_others(uid);
        let mut held = Held::new();
        for (resource, n) in &wants {
            let free: Vec<&DeviceConfig> = self
                .devices
                .iter()
                .filter(|d| &d.resource == resource && !taken.contains(&d.host))
                .filter(|d| device_node(&d.host, &d.container).is_ok())
                .collect();
            let n = usize::try_from(*n).unwrap_or(usize::MAX);
            if free.len() < n {
                let total = self
                    .devices
                    .iter()
                    .filter(|d| &d.resource == resource)
                    .count();
                return Err(format!(
                    "the pod asks for {n} {resource}; this node has {total}, {} of them free",
                    free.len()
                ));
            }
            held.insert(
                resource.clone(),
                free[..n].iter().map(|d| d.host.clone()).collect(),
            );
        }
        let json = serde_json::to_vec(&held).map_err(|e| e.to_string())?;
        let tmp = own.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &own))
            .map_err(|e| format!("cannot record the pod's devices in {}: {e}", own.display()))?;
        Ok(held)
    }

    /// Frees the devices of the pod `uid` (its containers are done for good).
    pub fn release(&self, uid: &str) {
        let _deciding = crate::sync::lock(&self.deciding);
        let _ = std::fs::remove_file(self.pods_dir.join(uid).join(HELD));
    }

    /// Whether what a pod held is still what it asks for, of devices still configured.
    fn still_fits(&self, held: &Held, wants: &BTreeMap<String, i128>) -> bool {
        held.len() == wants.len()
            && held.iter().all(|(r, paths)| {
                wants.get(r).and_then(|n| usize::try_from(*n).ok()) == Some(paths.len())
                    && paths.iter().all(|p| {
                        self.devices
                            .iter()
                            .any(|d| &d.resource == r && &d.host == p)
                    })
            })
    }

    fn taken_by_others(&self, uid: &str) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.pods_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_str() != Some(uid))
            .filter_map(|e| read_held(&e.path().join(HELD)))
            .flat_map(|h| h.into_values().flatten())
            .collect()
    }

    /// The device nodes a container gets, from what its pod holds: each container takes its
    /// count from the pod's list in order (init containers from its start, as they run before
    /// the others and may reuse them).
    pub fn for_container(
        &self,
        pod: &Pod,
        held: &Held,
        container: &str,
    ) -> std::io::Result<Vec<shoal_runtime::Device>> {
        let mut out = Vec::new();
        for (resource, paths) in held {
            let mut next = 0usize;
            let is_init = pod.spec.init_containers.iter().any(|c| c.name == container);
            let order: Box<dyn Iterator<Item = &shoal_api::Container>> = if is_init {
                Box::new(pod.spec.init_containers.iter())
            } else {
                Box::new(pod.spec.containers.iter())
            };
            for c in order {
                let n = container_requests(c, &self.devices)
                    .into_iter()
                    .find(|(r, _)| r == resource)
                    .map_or(0, |(_, n)| usize::try_from(n).unwrap_or(0));
                if c.name == container {
                    for host in paths.iter().skip(if is_init { 0 } else { next }).take(n) {
                        let Some(d) = self.devices.iter().find(|d| &d.host == host) else {
                            continue;
                        };
                        out.push(device_node(&d.host, &d.container)?);
                    }
                    break;
                }
                if !is_init {
                    next += n;
                }
            }
        }
        Ok(out)
    }
}

fn read_held(path: &Path) -> Option<Held> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Makes the device nodes `devices` in `dir`, at their paths under `/dev`: how a wasm
/// container gets them (WASI opens files under a preopened directory; `dir` is mounted at
/// `/dev`). Needs CAP_MKNOD, as runc does for OCI containers.
pub fn make_nodes(dir: &Path, devices: &[shoal_runtime::Device]) -> std::io::Result<()> {
    use rustix::fs::{FileType, Mode};
    std::fs::create_dir_all(dir)?;
    for d in devices {
        let Some(rel) = d.container_path.strip_prefix("/dev/") else {
            continue;
        };
        let at = dir.join(rel);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&at);
        let kind = if d.block {
            FileType::BlockDevice
        } else {
            FileType::CharacterDevice
        };
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &at,
            kind,
            Mode::from_raw_mode(d.file_mode & 0o7777),
            rustix::fs::makedev(d.major as u32, d.minor as u32),
        )
        .map_err(|e| {
            std::io::Error::other(format!(
                "cannot make the device node {} for a wasm container: {e} (the agent needs root)",
                at.display()
            ))
        })?;
        rustix::fs::chown(
            &at,
            Some(rustix::process::Uid::from_raw(d.uid)),
            Some(rustix::process::Gid::from_raw(d.gid)),
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_parse_and_bad_ones_say_why() {
        let d = parse(&[
            "devices.shoal.dev/serial=/dev/ttyUSB0,devices.shoal.dev/serial=/dev/serial/by-id/x:/dev/ttyS1".into(),
            "example.com/gpio=/dev/gpiochip0".into(),
        ])
        .expect("parses");
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].container, "/dev/ttyUSB0");
        assert_eq!(d[1].host, Path::new("/dev/serial/by-id/x"));
        assert_eq!(d[1].container, "/dev/ttyS1");
        for (bad, says) in [
            ("serial=/dev/ttyUSB0", "extended resource"),
            ("devices.shoal.dev/serial", "expected RESOURCE="),
            ("devices.shoal.dev/serial=dev/tty", "absolute"),
            ("devices.shoal.dev/serial=/tmp/x", "under /dev"),
            (
                "devices.shoal.dev/serial=/tmp/x:/dev/../etc/x",
                "under /dev",
            ),
            (
                "devices.shoal.dev/serial=/dev/a,example.com/b=/dev/a",
                "already given",
            ),
        ] {
            let e = parse(&[bad.into()]).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn pod(uid: &str, init: &[(&str, i64)], containers: &[(&str, i64)]) -> Pod {
        let c = |(name, n): &(&str, i64)| {
            let mut c = shoal_api::Container {
                name: name.to_string(),
                ..Default::default()
            };
            if *n > 0 {
                c.resources.limits.insert(
                    "devices.shoal.dev/null".into(),
                    n.to_string().parse().expect("qty"),
                );
            }
            c
        };
        let mut p = Pod::default();
        p.metadata.uid = uid.into();
        p.spec.init_containers = init.iter().map(c).collect();
        p.spec.containers = containers.iter().map(c).collect();
        p
    }

    #[test]
    fn pods_get_free_devices_keep_them_and_free_them() {
        let dir = tempfile::tempdir().expect("tmp");
        // /dev/null and /dev/zero stand in for two serial ports.
        let configured = parse(&[
            "devices.shoal.dev/null=/dev/null:/dev/ttyS0,devices.shoal.dev/null=/dev/zero:/dev/ttyS1"
                .into(),
        ])
        .expect("parses");
        assert_eq!(
            capacity(&configured).get("devices.shoal.dev/null"),
            Some(&"2".parse().expect("qty"))
        );
        let devices = Devices::new(configured, dir.path());
        let mk = |p: &Pod| std::fs::create_dir_all(dir.path().join("pods").join(&p.metadata.uid));
        let a = pod("a", &[("setup", 1)], &[("one", 1), ("none", 0)]);
        let b = pod("b", &[], &[("one", 1)]);
        let c = pod("c", &[], &[("one", 1)]);
        for p in [&a, &b, &c] {
            mk(p).expect("pod dir");
        }
        let held_a = devices.allocate(&a).expect("a fits");
        assert_eq!(held_a["devices.shoal.dev/null"].len(), 1, "init reuses");
        let node = |p: &Pod, h: &Held, c: &str| {
            devices
                .for_container(p, h, c)
                .expect("nodes")
                .into_iter()
                .map(|d| d.container_path)
                .collect::<Vec<_>>()
        };
        assert_eq!(node(&a, &held_a, "setup"), ["/dev/ttyS0"]);
        assert_eq!(node(&a, &held_a, "one"), ["/dev/ttyS0"]);
        assert!(node(&a, &held_a, "none").is_empty());
        let held_b = devices.allocate(&b).expect("b fits");
        assert_eq!(node(&b, &held_b, "one"), ["/dev/ttyS1"]);
        let e = devices.allocate(&c).expect_err("none left");
        assert!(
            e.contains("1 devices.shoal.dev/null") && e.contains("0 of them free"),
            "{e}"
        );
        assert_eq!(
            devices.allocate(&a).expect("again"),
            held_a,
            "a keeps its own"
        );
        devices.release("a");
        assert_eq!(
            node(&c, &devices.allocate(&c).expect("freed"), "one"),
            ["/dev/ttyS0"]
        );
        // A pod directory gone (deleted while no agent ran) frees its devices too.
        std::fs::remove_dir_all(dir.path().join("pods/b")).expect("rm");
        assert_eq!(devices.allocate(&a).expect("b's").len(), 1);
    }
}
