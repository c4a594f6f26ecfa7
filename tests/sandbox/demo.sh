#!/bin/bash
# demo.sh: nm-multiwan in action, on any Linux box, without touching its real network.
#
# Run as root from anywhere:  sudo tests/sandbox/demo.sh
#
# It builds a throw-away machine in network namespaces (tests/sandbox/sandbox.sh): a private
# NetworkManager with three uplinks (eth0 static via ISP 1, wlan0 DHCP via ISP 2, usb0 static
# via ISP 3) and an "internet" server that answers each connection with the address it came
# from, so you see which ISP carried it. nm-multiwan (target/release/nm-multiwan, built if
# missing) is hooked in exactly as a package installs it: NetworkManager's dispatcher runs
# dispatcher.d/90-nm-multiwan on every `nmcli connection up/down`.
#
# Steps: bring the uplinks up one by one, show `nm-multiwan status`, open 12 connections and
# show which ISP answered each, bring wlan0 down and show the balance follow. The sandbox is
# destroyed at the end, on error and on Ctrl-C. Exit status 0 when every connection behaved.
#
# Environment: DEMO_PAUSE=1 waits for Enter between steps. DEMO_KEEP=1 keeps the sandbox
# (remove it with: tests/sandbox/sandbox.sh destroy NAME). Installs the tools it needs as
# tests/run.sh does (install-deps.sh), and needs cargo if the binary is not built yet.
set -eu
set -o pipefail

HERE=$(cd "$(dirname "$0")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
SANDBOX="$HERE/sandbox.sh"
BINARY="$REPO/target/release/nm-multiwan"
DISPATCHER="$REPO/dispatcher.d/90-nm-multiwan"
SERVER=198.51.100.10
SB="demo$$"
PROBLEMS=0

die() {
    printf 'demo.sh: error: %s\n' "$*" >&2
    exit 1
}

step() {
    printf '\n==> %s\n' "$*"
    if [ "${DEMO_PAUSE:-0}" = 1 ]; then
        printf '    (Enter to go on) '
        read -r _ </dev/tty || true
    fi
}

# Shows a command as typed on the sandboxed machine, then runs it there.
on_host() {
    local out rc=0
    printf '    $ %s\n' "$*"
    out=$("$SANDBOX" exec "$SB" "$@" 2>&1) || rc=$?
    printf '%s\n' "$out" | sed 's/^/      /'
    if [ "$rc" != 0 ]; then
        printf '    !! exit status %s\n' "$rc"
        PROBLEMS=$((PROBLEMS + 1))
    fi
}

isp_of() {
    case "$1" in
        203.0.113.6) printf 'ISP 1 (eth0)' ;;
        203.0.113.10) printf 'ISP 2 (wlan0)' ;;
        203.0.113.14) printf 'ISP 3 (usb0)' ;;
        *) printf 'no answer' ;;
    esac
}

# connections N EXPECTED...: N connections to the server, each line saying which ISP carried
# it; a problem is counted unless every connection succeeded and exactly EXPECTED ISPs were seen.
connections() {
    local n=$1 i addr seen='' isp
    shift
    # shellcheck disable=SC2016 # printed for the reader, not run
    printf '    $ for i in $(seq %s); do socat - TCP:%s:7000; done\n' "$n" "$SERVER"
    for i in $(seq "$n"); do
        addr=$("$SANDBOX" exec "$SB" socat -T3 - "TCP:$SERVER:7000,connect-timeout=3" 2>/dev/null) || addr=''
        isp=$(isp_of "$addr")
        printf '      connection %2d: server saw %-13s -> %s\n' "$i" "${addr:-(failed)}" "$isp"
        if [ -z "$addr" ]; then
            PROBLEMS=$((PROBLEMS + 1))
        fi
        case " $seen " in *" $addr "*) ;; *) seen="$seen $addr" ;; esac
    done
    for isp in "$@"; do
        case " $seen " in
            *" $isp "*) ;;
            *) printf '    !! expected connections through %s, saw none\n' "$(isp_of "$isp")"
               PROBLEMS=$((PROBLEMS + 1)) ;;
        esac
    done
    for addr in $seen; do
        case " $* " in
            *" $addr "*) ;;
            *) printf '    !! unexpected: connections through %s\n' "$(isp_of "$addr")"
               PROBLEMS=$((PROBLEMS + 1)) ;;
        esac
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        printf '\nKeeping sandbox %s: %s exec %s nmcli device; %s destroy %s\n' \
            "$SB" "$SANDBOX" "$SB" "$SANDBOX" "$SB"
    else
        printf '\n==> destroying the sandbox\n'
        SB_QUIET=1 "$SANDBOX" destroy "$SB" || true
    fi
    exit "$rc"
}

[ "$(id -u)" = 0 ] || die "run as root (it creates network namespaces): sudo $0"
"$HERE/install-deps.sh" || die "could not install the tools the sandbox needs"
"$SANDBOX" check || die "install the missing packages first"
# A demo killed before it could clean up left a sandbox whose owner is gone.
"$SANDBOX" reap
[ -f "$DISPATCHER" ] || die "missing $DISPATCHER (the dispatcher hook nm-multiwan ships)"
if [ ! -x "$BINARY" ]; then
    command -v cargo >/dev/null 2>&1 || die "$BINARY is not built and cargo is not installed"
    printf '==> building nm-multiwan (cargo build --release)\n'
    (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
fi

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "building sandbox $SB: eth0 static via ISP 1, wlan0 DHCP via ISP 2, usb0 static via ISP 3"
owner=$$
[ "${DEMO_KEEP:-0}" != 1 ] || owner='' # kept: nothing reaps it
SB_OWNER=$owner SB_DISPATCHER="$DISPATCHER" SB_BINARY="$BINARY" "$SANDBOX" create "$SB" \
    eth0:static:1 wlan0:dhcp:2 usb0:static:3 || die "could not build the sandbox"
printf '    NetworkManager runs privately in namespace %s-host, its dispatcher calls\n' "$SB"
printf '    /usr/bin/nm-multiwan (that is %s) on every up/down.\n' "$BINARY"
on_host nmcli device

for c in up-eth0 up-wlan0 up-usb0; do
    step "nmcli connection up $c"
    "$SANDBOX" wait-up "$SB" "$c" || die "could not bring $c up"
    on_host nmcli -t -f DEVICE,STATE,CONNECTION device
done

step "nm-multiwan status"
on_host nm-multiwan status

step "12 new connections to the internet server $SERVER: spread over the three ISPs"
connections 12 203.0.113.6 203.0.113.10 203.0.113.14

step "nmcli connection down up-wlan0"
"$SANDBOX" wait-down "$SB" up-wlan0 || die "could not bring up-wlan0 down"
on_host nm-multiwan status

step "12 new connections again: only ISP 1 and ISP 3 now"
connections 12 203.0.113.6 203.0.113.14

if [ "$PROBLEMS" = 0 ]; then
    printf '\nAll connections behaved: nm-multiwan follows NetworkManager.\n'
else
    printf '\n%s problem(s) above. Logs: %s info %s (NetworkManager, nm-dispatcher).\n' \
        "$PROBLEMS" "$SANDBOX" "$SB"
    printf 'Run with DEMO_KEEP=1 to look around before the sandbox is removed.\n'
    exit 1
fi
