#!/bin/bash
# seed-recipe.sh: the hand-made recipe nm-multiwan automates (see the README: ip rule fwmark ->
# per-uplink table, iptables mangle OUTPUT nth marking + CONNMARK, MASQUERADE per uplink),
# applied as written to a sandbox's host: a baseline for comparisons and benchmarks.
#
#   seed-recipe.sh apply SB   one mark/table per device NetworkManager has connected with an
#                             IPv4 gateway: marks 10, 11, ..., tables 110, 111, ..., prio 31000
#   seed-recipe.sh flush SB   remove it again (rules at prio 31000, tables 110-117, mangle
#                             OUTPUT and nat POSTROUTING flushed: in the sandbox only the recipe
#                             uses them; do not run nm-multiwan at the same time)
#
# Known failures of the recipe (what nm-multiwan must do better), all reproduced with it:
# with rp_filter=1 replies of connections marked for a non-default uplink are dropped; LAN
# hosts of an uplink are reached through the wrong one; connections arriving from a LAN or from
# the internet are answered through the wrong uplink.
set -eu
set -o pipefail
HERE=$(cd "$(dirname "$0")" && pwd -P)
SANDBOX="$HERE/sandbox.sh"

die() {
    printf 'seed-recipe.sh: error: %s\n' "$*" >&2
    exit 1
}
on_host() { "$SANDBOX" exec "$SB" "$@" </dev/null; }

[ "$#" = 2 ] || die "usage: $0 apply|flush SB"
SB=$2

flush() {
    local t
    while on_host ip rule del prio 31000 2>/dev/null; do :; done
    for t in 110 111 112 113 114 115 116 117; do
        on_host ip route flush table "$t" 2>/dev/null || true
    done
    on_host iptables -t mangle -F OUTPUT
    on_host iptables -t nat -F POSTROUTING
}

apply() {
    local dev state gw net n=0 i devs=''
    while IFS=: read -r dev state; do
        [ "$state" = connected ] || continue
        gw=$(on_host nmcli -g IP4.GATEWAY device show "$dev")
        [ -n "$gw" ] || continue
        # The device's connected subnet, as `ip route` shows it.
        net=$(on_host ip -4 route show dev "$dev" scope link proto kernel | awk 'NR == 1 {print $1}')
        [ -n "$net" ] || die "no subnet route on $dev"
        on_host ip rule add fwmark $((10 + n)) table $((110 + n)) prio 31000
        on_host ip route add "$net" dev "$dev" table $((110 + n))
        on_host ip route add default via "$gw" table $((110 + n))
        printf 'seed-recipe.sh: %s: mark %s, table %s, via %s\n' "$dev" $((10 + n)) $((110 + n)) "$gw" >&2
        devs="$devs $dev"
        n=$((n + 1))
    done < <(on_host nmcli -t -f DEVICE,STATE device)
    [ "$n" -gt 0 ] || die "no connected device with a gateway in sandbox $SB"
    on_host iptables -t mangle -A OUTPUT -j CONNMARK --restore-mark
    on_host iptables -t mangle -A OUTPUT -m mark ! --mark 0 -j ACCEPT
    on_host iptables -t mangle -A OUTPUT -j MARK --set-mark 10
    for i in $(seq 1 $((n - 1))); do
        on_host iptables -t mangle -A OUTPUT -m statistic --mode nth --every "$n" --packet $((i - 1)) \
            -j MARK --set-mark $((10 + i))
    done
    on_host iptables -t mangle -A OUTPUT -j CONNMARK --save-mark
    for dev in $devs; do
        on_host iptables -t nat -A POSTROUTING -o "$dev" -j MASQUERADE
    done
}

case "$1" in
    apply) apply ;;
    flush) flush ;;
    *) die "usage: $0 apply|flush SB" ;;
esac
