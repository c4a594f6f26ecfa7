#!/usr/bin/env bash
# install-deps.sh: installs the tools the sandbox, the end-to-end tests and the demo use, if
# any is missing (Debian/Ubuntu, with apt-get). Elsewhere it names the missing packages and
# fails. Run as root; tests/run.sh and tests/sandbox/demo.sh run it first.
set -euo pipefail

# command:Debian package
needed="NetworkManager:network-manager nmcli:network-manager iptables:iptables
iptables-restore:iptables ip6tables-restore:iptables nft:nftables dnsmasq:dnsmasq-base
ip:iproute2 tc:iproute2 socat:socat iperf3:iperf3 conntrack:conntrack dbus-daemon:dbus
python3:python3 nsenter:util-linux unshare:util-linux setpriv:util-linux flock:util-linux
tmux:tmux busybox:busybox"
missing=""
for pair in $needed; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
        case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
    fi
done
[ -n "$missing" ] || exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps.sh: please install the packages providing:$missing" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-deps.sh: missing:$missing; run as root to install them (sudo)" >&2
    exit 1
fi
echo "install-deps.sh: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # a list of package names
apt-get install -y -q --no-install-recommends $missing
