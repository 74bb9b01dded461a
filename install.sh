#!/bin/sh
# Installs shoal as a systemd service, the way K3s installs in one line; upgrades it in place;
# removes it.
#
#   sudo ./install.sh controller
#   sudo ./install.sh agent --server 10.0.0.2:7443 --token-file token [--name pi-7] [--labels k=v]
#   sudo ./install.sh uninstall [--keep-data]
#
# The binary: SHOAL_BIN, else the one for this machine's architecture beside this script
# (shoal-ARCH, ARCH one of x86_64, aarch64, armv7, as `./build-static.sh` leaves them in dist/;
# for an agent, the agent-only shoal-agent-ARCH first), else ./shoal, else
# target/release/shoal. It is checked against SHOAL_SHA256, else against
# the SHA256SUMS file beside it when there is one, and refused if it does not match.
#
# Environment (each flag above has one):
#   SHOAL_SERVER        agent: the controller, HOST:PORT (required)
#   SHOAL_TOKEN_FILE    agent: a file holding the join token (required the first time), or
#   SHOAL_TOKEN         the token itself. It is kept in /etc/shoal/token, readable by root
#                       only, and the agent removes that file once the node has joined: from
#                       then on the node's own certificate is all it holds.
#   SHOAL_NODE_NAME     agent: the node's name (default: the host name)
#   SHOAL_NODE_LABELS   agent: extra labels, k=v,k2=v2
#   SHOAL_ARCH          the architecture to install for (default: uname -m)
#   SHOAL_INSTALL_ROOT  install under this directory instead of / and start nothing (for
#                       packaging and tests)
#
# What it changes on the host: /usr/local/bin/shoal, /etc/systemd/system/shoal-*.service,
# /etc/shoal (settings, token), and the data in /var/lib/shoal (the controller's store; the
# agent's identity, images and pods in /var/lib/shoal/agent, the same directory a root
# `shoal agent` run by hand uses). The agent makes the pod bridge (shoal0), a network namespace
# per OCI pod and mounts beneath its data dir; `uninstall` removes them all (`shoal reset`).
set -eu

usage() {
    echo "usage: $0 controller | agent --server HOST:PORT --token-file FILE [--name NAME] [--labels K=V,...] | uninstall [--keep-data]" >&2
    exit 2
}

role=${1:-}
[ $# -gt 0 ] && shift
keep_data=""
while [ $# -gt 0 ]; do
    case "$1" in
        --server) SHOAL_SERVER=${2:?--server needs HOST:PORT}; shift ;;
        --token-file) SHOAL_TOKEN_FILE=${2:?--token-file needs a file}; shift ;;
        --name) SHOAL_NODE_NAME=${2:?--name needs a name}; shift ;;
        --labels) SHOAL_NODE_LABELS=${2:?--labels needs K=V,...}; shift ;;
        --keep-data) keep_data=--keep-data ;;
        *) echo "$0: unknown argument $1" >&2; usage ;;
    esac
    shift
done
case "$role" in
    controller | agent | uninstall) ;;
    *) usage ;;
esac

root=${SHOAL_INSTALL_ROOT:-}
here=$(cd "$(dirname "$0")" && pwd)
systemd() {
    [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]
}

if [ "$role" = uninstall ]; then
    for unit in shoal-agent shoal-controller; do
        if systemd && [ -f "/etc/systemd/system/$unit.service" ]; then
            systemctl disable --now "$unit" || true
        fi
    done
    # An agent stop leaves the pods running (for the next agent): reset stops them and removes
    # their networks, mounts and the pod bridge, then the data unless --keep-data.
    bridge=$(sed -n 's/^SHOAL_POD_BRIDGE=//p' "$root/etc/shoal/agent.env" 2>/dev/null || true)
    bridge=${SHOAL_POD_BRIDGE:-${bridge:-shoal0}}
    shoal="$root/usr/local/bin/shoal"
    for dir in "$root/var/lib/shoal/agent" "$root/var/lib/shoal-agent"; do
        [ -d "$dir" ] || continue
        if "$shoal" --version >/dev/null 2>&1; then
            "$shoal" reset --force --data-dir "$dir" --pod-bridge "$bridge" $keep_data
        else
            echo "$shoal cannot run here: $dir is not reset (its pods may still run)" >&2
        fi
    done
    rm -f "$root/etc/systemd/system/shoal-agent.service" \
        "$root/etc/systemd/system/shoal-controller.service" "$shoal"
    rm -rf "$root/etc/shoal"
    if [ -z "$keep_data" ]; then
        rm -rf "$root/var/lib/shoal" "$root/var/lib/shoal-agent"
    fi
    if systemd; then
        systemctl daemon-reload
    fi
    echo "shoal removed${keep_data:+ (its data kept in $root/var/lib/shoal)}"
    exit 0
fi

case "${SHOAL_ARCH:-$(uname -m)}" in
    x86_64 | amd64) arch=x86_64 ;;
    aarch64 | arm64) arch=aarch64 ;;
    armv7l | armv7 | armhf | arm) arch=armv7 ;;
    *)
        echo "no shoal build for this architecture: ${SHOAL_ARCH:-$(uname -m)} (there are x86_64, aarch64, armv7)" >&2
        exit 1
        ;;
esac
bin=${SHOAL_BIN:-}
if [ -z "$bin" ]; then
    # An agent takes the agent-only build where there is one (smaller, no compiler).
    # Names relative to the script's directory, which may hold spaces.
    names="shoal-$arch dist/shoal-$arch shoal target/release/shoal"
    if [ "$role" = agent ]; then
        names="shoal-agent-$arch dist/shoal-agent-$arch $names"
    fi
    for name in $names; do
        if [ -f "$here/$name" ]; then
            bin="$here/$name"
            break
        fi
    done
fi
if [ -z "$bin" ] || [ ! -f "$bin" ]; then
    echo "no shoal binary for $arch: put shoal-$arch beside $0 (./build-static.sh makes dist/), set SHOAL_BIN, or build one (cargo build --release)" >&2
    exit 1
fi
# The checksum, before anything is installed: a truncated copy or a swapped file stops here.
sums="$(dirname "$bin")/SHA256SUMS"
got=$(sha256sum "$bin" | cut -d' ' -f1)
if [ -n "${SHOAL_SHA256:-}" ]; then
    want=$SHOAL_SHA256
    from=SHOAL_SHA256
elif [ -f "$sums" ]; then
    want=$(awk -v f="$(basename "$bin")" '$2 == f || $2 == "*" f { print $1 }' "$sums")
    from=$sums
    if [ -z "$want" ]; then
        echo "$(basename "$bin") is not listed in $sums: refusing a binary with no checksum" >&2
        exit 1
    fi
else
    want=""
fi
if [ -n "$want" ]; then
    if [ "$got" != "$want" ]; then
        echo "checksum mismatch for $bin: sha256 $got, $from says $want; nothing installed" >&2
        exit 1
    fi
    echo "verified $bin (sha256 $got)"
else
    echo "not verified: no SHA256SUMS beside $bin and no SHOAL_SHA256 (sha256 $got)" >&2
fi

if [ "$role" = agent ]; then
    if [ -z "${SHOAL_SERVER:-}" ]; then
        echo "SHOAL_SERVER is required for an agent (--server, the controller, HOST:PORT)" >&2
        exit 1
    fi
    if [ -n "${SHOAL_TOKEN_FILE:-}" ]; then
        if [ ! -r "$SHOAL_TOKEN_FILE" ]; then
            echo "SHOAL_TOKEN_FILE: cannot read $SHOAL_TOKEN_FILE" >&2
            exit 1
        fi
        SHOAL_TOKEN=$(cat "$SHOAL_TOKEN_FILE")
    fi
    # The node's identity from an earlier install, in the directory units used before.
    if [ -d "$root/var/lib/shoal-agent" ] && [ ! -e "$root/var/lib/shoal/agent" ]; then
        if systemd && systemctl is-active --quiet shoal-agent; then
            systemctl stop shoal-agent
        fi
        mkdir -p "$root/var/lib/shoal"
        mv "$root/var/lib/shoal-agent" "$root/var/lib/shoal/agent"
        echo "moved the node's data from /var/lib/shoal-agent to /var/lib/shoal/agent"
    fi
    if [ -z "${SHOAL_TOKEN:-}" ] && [ ! -f "$root/var/lib/shoal/agent/node.conf" ]; then
        echo "SHOAL_TOKEN_FILE (or SHOAL_TOKEN) is required the first time: --token-file FILE, made on the controller by  shoal token create --ttl 1h --usages 1" >&2
        exit 1
    fi
fi

mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/shoal"
# A new file renamed over the old: a running shoal keeps its binary, the next start the new one.
install -m 0755 "$bin" "$root/usr/local/bin/.shoal.new"
mv -f "$root/usr/local/bin/.shoal.new" "$root/usr/local/bin/shoal"

if [ "$role" = controller ]; then
    cat >"$root/etc/systemd/system/shoal-controller.service" <<'UNIT'
[Unit]
Description=Shoal controller (store, API, scheduler)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile=-/etc/shoal/controller.env
ExecStart=/usr/local/bin/shoal controller --data-dir /var/lib/shoal
Restart=always
RestartSec=2
# The store survives a kill at any moment; stop it the same way as a crash would.
KillMode=mixed
TimeoutStopSec=30
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
UNIT
    [ -f "$root/etc/shoal/controller.env" ] || : >"$root/etc/shoal/controller.env"
    unit=shoal-controller
else
    umask 077
    # The token goes in a file of its own, never on a command line (ps shows those); the
    # agent deletes the file after its first join.
    if [ -n "${SHOAL_TOKEN:-}" ]; then
        printf '%s\n' "$SHOAL_TOKEN" >"$root/etc/shoal/token"
        chmod 0600 "$root/etc/shoal/token"
    fi
    {
        echo "SHOAL_SERVER=$SHOAL_SERVER"
        [ -n "${SHOAL_TOKEN:-}" ] && echo "SHOAL_TOKEN_FILE=/etc/shoal/token"
        [ -n "${SHOAL_NODE_NAME:-}" ] && echo "SHOAL_NODE_NAME=$SHOAL_NODE_NAME"
        [ -n "${SHOAL_NODE_LABELS:-}" ] && echo "SHOAL_NODE_LABELS=$SHOAL_NODE_LABELS"
        true
    } >"$root/etc/shoal/agent.env"
    chmod 0600 "$root/etc/shoal/agent.env"
    umask 022
    cat >"$root/etc/systemd/system/shoal-agent.service" <<'UNIT'
[Unit]
Description=Shoal agent (runs this node's pods)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
# SHOAL_SERVER, SHOAL_TOKEN_FILE (first join only), SHOAL_NODE_NAME, SHOAL_NODE_LABELS
EnvironmentFile=/etc/shoal/agent.env
# An over-the-air upgrade cut short (a power cut while the new agent was on trial, its guard
# gone with it) goes back to the binary it came from before the agent starts.
# ($$ is a $ for the shell: systemd expands $NAME itself.)
ExecStartPre=-/bin/sh -c 'u=/var/lib/shoal/agent/upgrade; [ ! -x "$$u/previous" ] || exec "$$u/previous" agent-guard "$$u/state.json" --recover'
ExecStart=/usr/local/bin/shoal agent --data-dir /var/lib/shoal/agent
Restart=always
RestartSec=2
# A stop (an upgrade, a restart) leaves the pods running: SIGTERM goes to the agent alone,
# which exits at once and leaves each OCI container and its wrapper process (which holds the
# container's output while no agent reads it) for the next agent to take back; wasm pods, in
# the agent's process, start again with it. To stop the pods with the agent instead, add
# --drain-on-stop to ExecStart (systemctl edit shoal-agent).
KillMode=process
TimeoutStopSec=60
LimitNOFILE=65536
Delegate=yes

[Install]
WantedBy=multi-user.target
UNIT
    unit=shoal-agent
fi

echo "installed $root/usr/local/bin/shoal ($("$root/usr/local/bin/shoal" --version 2>/dev/null || echo "for another architecture"))"
echo "installed $root/etc/systemd/system/$unit.service"
if [ -n "$root" ]; then
    exit 0
fi
if systemd; then
    systemctl daemon-reload
    if systemctl is-active --quiet "$unit"; then
        # An upgrade: the agent's restart leaves its pods running.
        systemctl restart "$unit"
        echo "restarted $unit on the new binary"
    else
        systemctl enable --now "$unit"
        echo "started $unit: systemctl status $unit; journalctl -u $unit -f"
    fi
else
    echo "no systemd here: start it with  /usr/local/bin/shoal $role ..." >&2
fi
