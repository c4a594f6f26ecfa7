#!/usr/bin/env bash
# The whole test suite: unit and property tests, then the end-to-end tests against a real
# NetworkManager in network namespaces (those need root). On Debian/Ubuntu the tools the
# sandbox needs are installed first if any is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: the end-to-end tests need root (network namespaces, a private NetworkManager); run: sudo tests/run.sh" >&2
    exit 1
fi

# command:Debian package
needed="NetworkManager:network-manager nmcli:network-manager iptables-restore:iptables
ip6tables-restore:iptables nft:nftables dnsmasq:dnsmasq-base ip:iproute2 socat:socat
iperf3:iperf3 conntrack:conntrack dbus-daemon:dbus python3:python3"
missing=""
for pair in $needed; do
    cmd=${pair%%:*}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing="$missing ${pair#*:}"
done
if [ -n "$missing" ]; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing:$missing" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        # shellcheck disable=SC2086 # a list of package names
        apt-get install -y -q --no-install-recommends $missing
    else
        echo "tests/run.sh: please install the packages providing:$missing" >&2
        exit 1
    fi
fi

# Two sandboxes at a time: each runs its own NetworkManager and dbus-daemon.
cargo test --locked -- --test-threads=2 "$@"
