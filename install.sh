#!/bin/sh
# Installs shoal as a systemd service, the way K3s installs in one line.
#
#   sudo ./install.sh controller
#   sudo SHOAL_SERVER=10.0.0.2:7443 SHOAL_TOKEN_FILE=/root/token ./install.sh agent
#
# Environment:
#   SHOAL_BIN           the binary to install (default: ./shoal, else target/release/shoal)
#   SHOAL_SERVER        agent: the controller, HOST:PORT (required)
#   SHOAL_TOKEN_FILE    agent: a file holding the join token (required the first time), or
#   SHOAL_TOKEN         the token itself. It is kept in /etc/shoal/token, readable by root
#                       only, and the agent removes that file once the node has joined: from
#                       then on the node's own certificate is all it holds.
#   SHOAL_NODE_NAME     agent: the node's name (default: the host name)
#   SHOAL_NODE_LABELS   agent: extra labels, k=v,k2=v2
#   SHOAL_INSTALL_ROOT  install under this directory instead of / and start nothing (for
#                       packaging and tests)
set -eu

role=${1:-}
case "$role" in
    controller | agent) ;;
    *)
        echo "usage: $0 controller|agent   (see the comments at the top for the environment)" >&2
        exit 2
        ;;
esac

root=${SHOAL_INSTALL_ROOT:-}
here=$(cd "$(dirname "$0")" && pwd)
bin=${SHOAL_BIN:-}
if [ -z "$bin" ]; then
    for candidate in "$here/shoal" "$here/target/release/shoal"; do
        if [ -x "$candidate" ]; then
            bin=$candidate
            break
        fi
    done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "no shoal binary: set SHOAL_BIN, or build one (cargo build --release)" >&2
    exit 1
fi

if [ "$role" = agent ]; then
    if [ -z "${SHOAL_SERVER:-}" ]; then
        echo "SHOAL_SERVER is required for an agent (the controller, HOST:PORT)" >&2
        exit 1
    fi
    if [ -n "${SHOAL_TOKEN_FILE:-}" ]; then
        if [ ! -r "$SHOAL_TOKEN_FILE" ]; then
            echo "SHOAL_TOKEN_FILE: cannot read $SHOAL_TOKEN_FILE" >&2
            exit 1
        fi
        SHOAL_TOKEN=$(cat "$SHOAL_TOKEN_FILE")
    fi
    if [ -z "${SHOAL_TOKEN:-}" ] && [ ! -f "$root/var/lib/shoal-agent/node.conf" ]; then
        echo "SHOAL_TOKEN_FILE (or SHOAL_TOKEN) is required the first time (on the controller: shoal token create --ttl 1h --usages 1)" >&2
        exit 1
    fi
fi

mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/etc/shoal"
install -m 0755 "$bin" "$root/usr/local/bin/shoal"

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
ExecStart=/usr/local/bin/shoal agent --data-dir /var/lib/shoal-agent
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
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now "$unit"
    echo "started $unit: systemctl status $unit; journalctl -u $unit -f"
else
    echo "no systemd here: start it with  /usr/local/bin/shoal $role ..." >&2
fi
