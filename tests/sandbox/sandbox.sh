#!/bin/bash
# sandbox.sh: a throw-away multi-uplink machine in network namespaces, driven by a real
# NetworkManager on a private D-Bus, for nm-multiwan's end-to-end tests, demo and benchmarks.
# Needs root. Touches nothing outside the namespaces and mounts it creates (see README.md here).
#
# SUBCOMMANDS
#   create SB SPEC...       Build sandbox SB (letters, digits, _; short, e.g. e2e1). Namespaces are
#                           SB-host (NetworkManager, the machine under test), SB-isp1..SB-isp8,
#                           SB-campus, SB-inet. Each SPEC is one host uplink:
#                             IFACE:static:K[:ID]  ISP K (1..8), host 10.200.K.2/24 gw 10.200.K.1
#                                                  (ISP K's next static uplinks: .3, .4, ...)
#                             IFACE:dhcp:K[:ID]    ISP K, dnsmasq gives 10.200.K.100-150, gw .1
#                             IFACE:campus[:ID]    the campus bridge, 10.250.0.0/24 gw 10.250.0.1,
#                                                  DHCP 10.250.0.100-150; all campus uplinks share it
#                           ID is the NetworkManager connection id (default up-IFACE).
#                           Fails if SB exists; cleans up after itself if it fails (SB_KEEP=1: keep).
#   destroy SB              Kill every process in SB's namespaces, delete them, remove the work dir.
#                           Idempotent, works on a half-built sandbox, never touches other prefixes.
#   exec SB CMD...          Run CMD in SB-host inside the private mount namespace where the
#                           private bus, nm-dispatcher, /usr/bin/nm-multiwan (SB_BINARY), the
#                           private /etc/nm-multiwan and /run live (nsenter -m -n), so nmcli and
#                           nm-multiwan talk to the sandbox's NetworkManager. Exit code is CMD's.
#   exec-ns SB NAME CMD...  Run CMD in namespace SB-NAME (host, inet, isp1.., campus); plain
#                           `ip netns exec`, i.e. the real mount namespace.
#   wait-up SB CONN [T]     `nmcli con up CONN`, then wait (T seconds, default 30) until its device
#                           is activated and the dispatcher has run every script for its `up`.
#   wait-down SB CONN [T]   `nmcli con down CONN`, then wait for the dispatcher's `down`.
#   wait-for SB T CMD...    Run CMD (as with exec) every 0.1 s until it succeeds; fail after T s.
#   restart-nm [--reboot] SB [T]
#                           Stop NetworkManager (SIGTERM, SIGKILL after 10 s) and start it again in
#                           the same namespaces on the same private bus; wait (T s, default 20)
#                           until it answers. Its devices stay configured and are re-assumed.
#                           --reboot: in between, do what a reboot does to the host's network:
#                           delete its software links (macvlan, vlan, bridge, dummy ...), take
#                           the uplinks' addresses, routes and links down, and empty
#                           /run/NetworkManager, so that NetworkManager starts from its profiles
#                           (keyfiles) and DHCP lease files alone.
#   lanhost SB K A4 [A6]    Another host on ISP K's LAN: namespace SB-lanK, its eth0 on the ISP's
#                           bridge with address A4 (e.g. 10.200.1.77/24) and optionally A6
#                           (e.g. 2001:db8:1::77/64), default routes via the ISP router.
#   loss SB UP PCT          Upstream UP (isp1..isp8, campus) drops PCT % of the packets it handles,
#                           at random, each packet on its own (nft `numgen random mod 100 < PCT`
#                           drop, table inet sandbox_loss, on prerouting and output: what it
#                           forwards either way and what it answers itself). 0 removes it.
#                           No netem in this kernel: this is its loss.
#   slow-echo SB UP MIN MAX A probe target behind UP's gateway that answers late: PROBE
#                           (192.0.2.53, and 2001:db8:53::53 with SB_IPV6=1) on UP's lo, the
#                           kernel's own echo replies switched off there, and slow_echo.py
#                           answering echo requests to PROBE after MIN..MAX ms (uniform, at
#                           random). Run again to change the delay while it runs; `off` for
#                           MIN removes it all. Probes through each uplink reach its own ISP's
#                           target, so each uplink can have its own delay.
#   info SB                 key=value lines: work dir, owner, NetworkManager PID, keyfile dir, logs.
#   list                    Sandboxes that have a work dir or a namespace.
#   reap                    Destroy every sandbox whose owner (SB_OWNER at create) is gone: what
#                           a killed test run left behind. Sandboxes without an owner and those
#                           of live processes (other runs going on at the same time) are kept.
#   check                   Tell which required commands are missing (installs nothing;
#                           install-deps.sh next to this script installs them).
#
# ENVIRONMENT (create)
#   SB_RATE=10mbit     tbf shaping of each uplink on the ISP/campus side, both directions
#                      (downstream: tbf on the bridge port; upstream: port ingress -> ifb -> tbf).
#   SB_RATE_BURST      tbf burst (default 32kbit), SB_RATE_LATENCY (default 50ms).
#   SB_RATE_PER_ADDRESS=10mbit  cap each *address* instead (a network that limits every IP, not
#                      every port): on each uplink's port of every ISP and the campus, htb with one
#                      class per IPv4 address of the LAN (.2-.254) at this rate, both directions
#                      (downstream: by destination on the port's egress; upstream: port ingress ->
#                      ifb, by source), u32 filters on the address. Several addresses on one port
#                      (macvlans, each with its own DHCP lease) get this rate each. Anything else
#                      on the port (IPv6, ARP, other addresses) shares one more class at this rate.
#                      With SB_RATE too, the port as a whole is capped at SB_RATE on top.
#                      SB_RATE_QUEUE: packets queued per class (default 100).
#   SB_DISPATCHER=PATH script installed root:root 0755 into the private dispatcher.d (basename
#                      kept). A marker script zzzz-sandbox-marker always runs after it and
#                      appends "ACTION IFACE CONNECTION_ID" to WORK/dispatcher.log.
#   SB_BINARY=PATH     appears as /usr/bin/nm-multiwan inside the private mount namespace only
#                      (overlayfs on /usr/bin there, holding a copy of PATH, mode 0755, that
#                      any user can run even when PATH is in a home directory others cannot
#                      enter; a rebuild shows in the next sandbox).
#   SB_OWNER=PID       the process the sandbox belongs to (a test run): once it is gone, `reap`
#                      destroys the sandbox. Without it, only `destroy` does.
#   SB_DBUS_POLICY=PATH  a D-Bus policy file the private dbus-daemon loads at start: copied to
#                      /etc/dbus-1/system.d/ in the private /etc overlay (WORK/ovl/etc/upper).
#   SB_CONFIG=PATH     copied to /etc/nm-multiwan/config.toml (private; WORK/etc-nm-multiwan on
#                      the real filesystem, editable from outside). /run is private and empty
#                      (WORK/run), with an empty /run/nm-multiwan.
#   SB_AUTOCONNECT=1   connections autoconnect (default: autoconnect=false, use wait-up).
#   SB_ROUTE_METRIC    default `fixed`: ipv4.route-metric 100, 101, ... in SPEC order, so the
#                      main table does not depend on activation order; `nm`: NetworkManager's
#                      own choice (equal metrics for all, bumped on conflict).
#   SB_RP_FILTER=1     net.ipv4.conf.{all,default,IFACE}.rp_filter in SB-host (default 1, strict).
#                      NetworkManager would loosen 1 to 2 on each device with a default route
#                      (and the kernel takes the max of all and device); with 1 the sandbox keeps
#                      it strict by giving NetworkManager dummy copies of those sysctl files.
#   SB_NM_LOOSENS_RP_FILTER=1  let NetworkManager loosen it as on a real machine.
#   SB_NM_LOG_LEVEL    NetworkManager log level (default INFO; DEBUG/TRACE for more).
#   SB_IPV6=1          dual-stack: IPv6 on every link too (default: IPv4 only, IPv6 disabled in
#                      every namespace). See ADDRESSES (IPv6).
#   SB_KEEP=1          keep a sandbox whose create failed, for debugging.
#   SB_ROOT            where work dirs go (default /tmp/nm-multiwan-sandbox); WORK = SB_ROOT/SB.
#
# ADDRESSES
#   ISP K (1..8): LAN 10.200.K.0/24 on bridge br0 in SB-ispK, gateway 10.200.K.1 (also a "LAN
#   host": TCP 7000 answers with the peer address it saw). Link to SB-inet 203.0.113.(4K)/30:
#   inet side 203.0.113.(4K+1), ISP side 203.0.113.(4K+2), which is what the internet sees
#   (MASQUERADE): isp1 .6, isp2 .10, isp3 .14, isp4 .18, isp5 .22, isp6 .26, isp7 .30, isp8 .34.
#   Campus: LAN 10.250.0.0/24 gw 10.250.0.1 (port 7000 too), link 203.0.113.36/30, seen as .38.
#   Name servers: ISP K runs a resolver at 192.0.2.K (campus: 192.0.2.9; on the ISP's lo, routed
#   by SB-inet through the ISP) that answers only its own customers: queries arriving on its wan
#   side are dropped, as ISP resolvers commonly do. It answers isp.test with 10.99.0.K and
#   probe.test with the server's address. DHCP hands it out (option 6); static uplinks carry it
#   in their keyfile (ipv4.dns), so NetworkManager learns it either way. With SB_IPV6=1 it also
#   listens on 2001:db8:K:53::1 (campus 2001:db8:250:53::1), handed out by DHCPv6 and router
#   advertisements (RDNSS), ipv6.dns for static uplinks.
#   SB-inet: server 198.51.100.10 (on lo): TCP 7000 echoes the peer address and closes (peer_server.py), TCP 7001
#   streams zeros until the client closes, TCP 7002 sends the peer address then echoes what it
#   gets (long-lived connections), TCP 7003 sends the peer address then zeros until the client
#   closes (a download that says which ISP carries it), UDP 7000 and 443 answer each datagram with
#   the peer address (udp_server.py; QUIC-like flows), iperf3 -s on 5201..5208. More destinations:
#   198.51.100.11-19 answer TCP and UDP 7010 the same way. It routes each LAN
#   (10.200.K.0/24, 10.250.0.0/24) back via its ISP, so it can connect INTO the host.
#   Interfaces in SB-inet are named isp1..isp8/campus; in SB-ispK: wan, br0, and one bridge port
#   per host uplink named like the host interface. ISPs filter strictly (rp_filter=1): a packet
#   from another ISP's LAN that leaves through the wrong ISP is dropped, as BCP 38 would.
#
# PRIVATE MOUNTS (in SB-host only, nothing on the real filesystem changes): /run (WORK/run),
#   /var/lib/NetworkManager, /etc/NetworkManager/dispatcher.d (WORK/dispatcher.d),
#   /etc/nm-multiwan (WORK/etc-nm-multiwan) through an overlay on /etc, /usr/bin overlay with
#   SB_BINARY, read-only /sys (NetworkManager without udev) with cgroup2 on /sys/fs/cgroup, the
#   bus's nm-dispatcher service
#   file (--debug), and for NetworkManager alone the devices' rp_filter files (SB_RP_FILTER).
#
# ADDRESSES (IPv6, with SB_IPV6=1)
#   ISP K: LAN 2001:db8:K::/64, router 2001:db8:K::1 (port 7000 answers on any of br0's
#   addresses, link-local too). Link to SB-inet 2001:db8:ff:K::/64: inet side ::1, ISP side ::2,
#   which is what the internet sees (NAT66, MASQUERADE). Campus: LAN 2001:db8:250::/64, link
#   2001:db8:ff:9::/64. SB-inet: server 2001:db8:100::10 (on lo), TCP 7000 and 7001 as for IPv4;
#   it routes each LAN back via its ISP. Each ISP drops packets from its LAN whose source is
#   not in that LAN (BCP 38), as the IPv4 side's strict rp_filter does.
#   How the host gets IPv6, by SPEC: static  2001:db8:K::2/64 gateway 2001:db8:K::1 (manual);
#   dhcp  DHCPv6 from dnsmasq (2001:db8:K::100-1ff, a /128) plus router advertisements with
#   the on-link prefix and the router's link-local address as gateway; campus  SLAAC from
#   router advertisements only. Connections require both families (may-fail=false), so an
#   `up` event means both are configured. The servers report IPv6 peers in the short form,
#   e.g. 2001:db8:ff:1::2.
#
# FILES: WORK/nm.log (NetworkManager), WORK/dispatcher.log (marker lines), WORK/nm-dispatcher.log
#   (nm-dispatcher --debug, with the output of the scripts it runs), WORK/log/*.log (dnsmasq, servers),
#   WORK/conns/*.nmconnection (keyfiles, 0600; `exec SB nmcli con reload` after editing).
set -eEu
set -o pipefail

PROG=sandbox.sh
CREATED=0
NM_PID=''
HOST_PID=''
NM_LOG=''
SB_ROOT=${SB_ROOT:-/tmp/nm-multiwan-sandbox}
case "$SB_ROOT" in
    /*) ;;
    *) printf '%s: error: SB_ROOT must be an absolute path\n' "$PROG" >&2; exit 1 ;;
esac
case "$SB_ROOT" in
    *[!A-Za-z0-9_./-]*) printf '%s: error: SB_ROOT may hold only letters, digits and _ . / -\n' "$PROG" >&2; exit 1 ;;
esac
SELF_DIR=$(cd "$(dirname "$0")" && pwd -P)
SELF="$SELF_DIR/$(basename "$0")"
SERVER=198.51.100.10
SERVER6=2001:db8:100::10
PROBE=192.0.2.53
PROBE6=2001:db8:53::53
REQUIRED_CMDS="ip:iproute2 tc:iproute2 nsenter:util-linux unshare:util-linux setsid:util-linux
mount:mount NetworkManager:network-manager nmcli:network-manager dbus-daemon:dbus
dnsmasq:dnsmasq-base iptables:iptables socat:socat iperf3:iperf3 conntrack:conntrack"

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
say() {
    [ -n "${SB_QUIET:-}" ] || printf '%s: %s\n' "$PROG" "$*" >&2
}
# Any unexpected failure names the command and the line.
trap 'printf "%s: error: command failed (exit %s, line %s): %s\n" "$PROG" "$?" "$LINENO" "$BASH_COMMAND" >&2' ERR

now_ms() {
    local t
    t=$(date +%s%N)
    printf '%s' "$((t / 1000000))"
}

usage() {
    sed -n '2,/^set -eEu/p' "$SELF" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

check_name() {
    case "$1" in
        '' | *[!A-Za-z0-9_]*) die "sandbox name '$1' must be letters, digits or _" ;;
    esac
    [ "${#1}" -le 16 ] || die "sandbox name '$1' is longer than 16 characters"
}

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, mounts)"
}

cmd_check() {
    local missing='' entry cmd pkg
    for entry in $REQUIRED_CMDS; do
        cmd=${entry%%:*}
        pkg=${entry#*:}
        if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
            missing="$missing $cmd($pkg)"
        fi
    done
    [ -x /usr/lib/NetworkManager/nm-dispatcher ] || [ -x /usr/libexec/nm-dispatcher ] ||
        missing="$missing nm-dispatcher(network-manager)"
    if [ -n "$missing" ]; then
        printf '%s: missing:%s\n' "$PROG" "$missing" >&2
        printf '%s: install them with: sudo %s/install-deps.sh\n' "$PROG" "$SELF_DIR" >&2
        return 1
    fi
}

ns_exists() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -Fxq -- "$1"
}

# The start time of process PID (field 22 of /proc/PID/stat, in clock ticks since boot): with
# the pid it names one process, even after the pid is reused. Fails when PID is gone.
proc_start() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086 # split into fields on purpose
    set -- $stat
    printf '%s\n' "${20}"
}

owner_alive() { # owner_alive WORK: WORK/owner ("PID STARTTIME") names a live process
    local pid start now
    read -r pid start <"$1/owner" || return 1
    now=$(proc_start "$pid") || return 1
    [ "$now" = "$start" ]
}

# All namespace names a sandbox may own; exact names, so prefix e2e1 never matches e2e10-*.
all_ns() {
    local k
    printf '%s\n' "$1-host" "$1-inet" "$1-campus"
    for k in 1 2 3 4 5 6 7 8; do printf '%s\n' "$1-isp$k" "$1-lan$k"; done
}

# The private mount namespace is entered through the private dbus-daemon (HOST_PID), which
# also D-Bus-activates nm-dispatcher there; NetworkManager (NM_PID) runs in a child mount
# namespace of it (see nm_inner).
nm_pid() { # nm_pid SB: sets HOST_PID and NM_PID, or dies saying why
    local w="$SB_ROOT/$1"
    [ -s "$w/nm.pid" ] || die "sandbox '$1' has no NetworkManager (no $w/nm.pid): not created?"
    NM_PID=$(cat "$w/nm.pid")
    HOST_PID=$(cat "$w/host.pid")
    NM_LOG="$w/nm.log"
    nm_alive
}

nm_alive() { # after nm_pid: dies if NetworkManager or its bus went away meanwhile
    [ -d "/proc/$NM_PID" ] || die "NetworkManager (pid $NM_PID) is not running; see $NM_LOG"
    [ -d "/proc/$HOST_PID" ] || die "the sandbox's dbus-daemon (pid $HOST_PID) is not running; see $NM_LOG"
}

host_wd() { # a working directory that exists in the private mount namespace too
    case "$PWD" in /run | /run/* | /var/run | /var/run/*) printf / ;; *) printf '%s' "$PWD" ;; esac
}

in_host() { # in_host SB CMD...: CMD in NetworkManager's mount and network namespace
    local sb=$1
    shift
    nm_pid "$sb"
    nsenter -t "$HOST_PID" -m -n --wd="$(host_wd)" -- "$@"
}

cmd_destroy() {
    local sb=$1 ns pids i left='' found=0
    check_name "$sb"
    need_root
    for ns in $(all_ns "$sb"); do
        ns_exists "$ns" || continue
        pids=$(ip netns pids "$ns" || true)
        # shellcheck disable=SC2086 # pid lists split on purpose
        [ -z "$pids" ] || kill -TERM $pids 2>/dev/null || true
        left="$left $ns"
    done
    # Up to 3 s for a clean exit (NetworkManager tears its devices down), then SIGKILL.
    for i in $(seq 30); do
        pids=''
        for ns in $left; do pids="$pids $(ip netns pids "$ns" 2>/dev/null || true)"; done
        [ -n "$(printf '%s' "$pids" | tr -d ' \n')" ] || break
        if [ "$i" = 30 ]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            sleep 0.2
        else
            sleep 0.1
        fi
    done
    for ns in $left; do
        ip netns del "$ns" 2>/dev/null || ! ns_exists "$ns" || die "cannot delete namespace $ns"
    done
    if [ -d "$SB_ROOT/$sb" ]; then
        # The owner file last: a destroy cut short still leaves a sandbox `reap` finds.
        find "$SB_ROOT/$sb" -mindepth 1 -maxdepth 1 ! -name owner -exec rm -rf -- {} +
        rm -rf -- "${SB_ROOT:?}/$sb"
        found=1
    fi
    if [ "$found" = 1 ] || [ -n "$left" ]; then
        say "sandbox '$sb' destroyed"
    else
        say "sandbox '$sb': nothing to destroy"
    fi
}

# --- create -------------------------------------------------------------------------------

# Globals filled by parse_specs: parallel arrays, one entry per uplink.
U_IFACE=()
U_KIND=() # static | dhcp | campus
U_UP=()   # upstream name: isp1..isp8 | campus
U_ID=()
U_HOST=() # static: last octet of the host address (2, 3, ... per ISP)

parse_specs() {
    local spec iface kind isp id i j statics=' ' host
    for spec in "$@"; do
        IFS=: read -r iface kind isp id <<<"$spec"
        host=''
        if [ "$kind" = campus ]; then
            [ -z "$id" ] || die "bad spec '$spec': IFACE:campus[:ID]"
            id=$isp
            isp=campus
        else
            case "$kind" in static | dhcp) ;; *) die "bad spec '$spec': MODE must be static, dhcp or campus" ;; esac
            case "$isp" in [1-8]) ;; *) die "bad spec '$spec': ISP must be 1..8" ;; esac
            if [ "$kind" = static ]; then
                # The first static uplink of ISP K is 10.200.K.2, the next .3, and so on.
                host=$(printf '%s' "$statics" | tr ' ' '\n' | grep -cx -- "$isp" || true)
                host=$((host + 2))
                statics="$statics$isp "
            fi
            isp=isp$isp
        fi
        case "$iface" in
            '' | *[!A-Za-z0-9_.-]* | [!A-Za-z]*) die "bad spec '$spec': interface name '$iface' (letters, digits, . _ -)" ;;
            lo | wan | br0 | up | down | ifb[0-9]*) die "bad spec '$spec': interface name '$iface' is reserved" ;;
        esac
        [ "${#iface}" -le 15 ] || die "bad spec '$spec': interface name longer than 15"
        [ -n "$id" ] || id="up-$iface"
        for j in "${!U_IFACE[@]}"; do
            [ "${U_IFACE[$j]}" != "$iface" ] || die "interface '$iface' given twice"
            [ "${U_ID[$j]}" != "$id" ] || die "connection id '$id' given twice"
        done
        i=${#U_IFACE[@]}
        U_IFACE[i]=$iface
        U_KIND[i]=$kind
        U_UP[i]=$isp
        U_ID[i]=$id
        U_HOST[i]=$host
    done
    [ "${#U_IFACE[@]}" -gt 0 ] || die "create needs at least one SPEC (e.g. eth0:static:1)"
}

# Per upstream: LAN prefix (first three octets), link index k (203.0.113.4k/30).
up_lan() { case "$1" in campus) printf '10.250.0' ;; isp*) printf '10.200.%s' "${1#isp}" ;; esac; }
up_idx() { case "$1" in campus) printf 9 ;; isp*) printf '%s' "${1#isp}" ;; esac; }

spawn() { # spawn NS LOGNAME CMD...: a daemon in NS, detached from our stdio and session
    local ns=$1 name=$2
    shift 2
    ip netns exec "$ns" setsid "$@" </dev/null >>"$W/log/$name.log" 2>&1 &
    printf '%s %s %s\n' "$!" "$ns" "$name" >>"$W/pids"
}

wait_until() { # wait_until TIMEOUT_S CMD...: poll CMD (which keeps its own output quiet)
    local timeout=$1 deadline
    shift
    deadline=$(($(now_ms) + timeout * 1000))
    until "$@"; do
        [ "$(now_ms)" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

listening() { # listening NS tcp|udp PORT [4|6]
    [ -n "$(ip netns exec "$1" ss -Hln --"$2" -"${4:-4}" "sport = :$3" 2>/dev/null)" ]
}

setup_upstream() { # setup_upstream NAME: namespace, link to inet, bridge, NAT, DHCP, LAN server
    local up=$1 ns="$SB-$1" lan k a_inet a_up i dhcp=0
    lan=$(up_lan "$up")
    k=$(up_idx "$up")
    a_inet=203.0.113.$((4 * k + 1))
    a_up=203.0.113.$((4 * k + 2))
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=1 \
        net.ipv4.conf.default.rp_filter=1 net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$SB-inet" link add "$up" type veth peer name wan netns "$ns"
    ip -n "$SB-inet" addr add "$a_inet/30" dev "$up"
    ip -n "$SB-inet" link set "$up" up
    ip -n "$ns" addr add "$a_up/30" dev wan
    ip -n "$ns" link set wan up
    ip -n "$ns" route add default via "$a_inet"
    ip -n "$SB-inet" route add "$lan.0/24" via "$a_up"
    # The ISP's resolver, beyond its gateway, for its own customers only.
    ip -n "$ns" addr add "192.0.2.$k/32" dev lo
    ip -n "$SB-inet" route add "192.0.2.$k/32" via "$a_up"
    ip netns exec "$ns" iptables -A INPUT -i wan -d "192.0.2.$k" -j DROP
    ip -n "$ns" link add br0 type bridge forward_delay 0 stp_state 0
    ip -n "$ns" addr add "$lan.1/24" dev br0
    ip -n "$ns" link set br0 up
    ip netns exec "$ns" iptables -t nat -A POSTROUTING -o wan -j MASQUERADE
    if [ "${SB_IPV6:-0}" = 1 ]; then
        setup_upstream6 "$up"
    fi
    for i in "${!U_IFACE[@]}"; do
        [ "${U_UP[$i]}" = "$up" ] || continue
        [ "${U_KIND[$i]}" = static ] || dhcp=1
        ip -n "$SB-host" link add "${U_IFACE[$i]}" type veth peer name "${U_IFACE[$i]}" netns "$ns"
        ip -n "$ns" link set "${U_IFACE[$i]}" master br0
        ip -n "$ns" link set "${U_IFACE[$i]}" up
        if [ -n "${SB_RATE_PER_ADDRESS:-}" ]; then
            shape_per_address "$ns" "${U_IFACE[$i]}" "ifb$i" "$lan"
        elif [ -n "${SB_RATE:-}" ]; then
            shape "$ns" "${U_IFACE[$i]}" "ifb$i"
        fi
    done
    local dns_listen=(--listen-address="192.0.2.$k")
    if [ "${SB_IPV6:-0}" = 1 ]; then
        dns_listen+=(--listen-address="$(up_lan6 "$up"):53::1")
    fi
    spawn "$ns" "dns-$up" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=53 \
        --no-resolv --no-hosts --user=root --group=root --bind-interfaces "${dns_listen[@]}" \
        --no-dhcp-interface=lo --address=/isp.test/"10.99.0.$k" --address=/probe.test/"$SERVER" \
        --pid-file= --log-facility=- --log-queries
    if [ "$dhcp" = 1 ]; then
        local v6=()
        if [ "${SB_IPV6:-0}" = 1 ]; then
            # Campus: SLAAC only. ISPs: stateful DHCPv6 (the RA says "managed").
            # shellcheck disable=SC2054 # the commas belong to dnsmasq's option
            if [ "$up" = campus ]; then
                v6=(--enable-ra --dhcp-range=::,constructor:br0,ra-only,64,1h)
            else
                v6=(--enable-ra --dhcp-range=::100,::1ff,constructor:br0,64,1h)
            fi
            v6+=(--dhcp-option=option6:dns-server,"[$(up_lan6 "$up"):53::1]")
        fi
        spawn "$ns" "dnsmasq-$up" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
            --no-resolv --no-hosts --user=root --group=root --interface=br0 --bind-interfaces \
            --dhcp-authoritative --no-ping --dhcp-range="$lan.100,$lan.150,255.255.255.0,1h" \
            --dhcp-option=3,"$lan.1" --dhcp-option=6,"192.0.2.$k" --dhcp-leasefile="$W/dnsmasq-$up.leases" --pid-file= \
            --log-facility=- --log-dhcp "${v6[@]}"
    fi
    spawn "$ns" "echo-$up" python3 "$SELF_DIR/peer_server.py" "$lan.1" 7000
    if [ "${SB_IPV6:-0}" = 1 ]; then
        # On br0 only, any address: the LAN's and the link-local one.
        spawn "$ns" "echo6-$up" python3 "$SELF_DIR/peer_server.py" :: 7000 --device br0
    fi
}

# Per upstream (IPv6): LAN prefix without the trailing "::".
up_lan6() { case "$1" in campus) printf '2001:db8:250' ;; isp*) printf '2001:db8:%s' "${1#isp}" ;; esac; }

setup_upstream6() { # setup_upstream6 NAME: IPv6 on the upstream's links, NAT66, anti-spoofing
    local up=$1 ns="$SB-$1" lan6 k
    lan6=$(up_lan6 "$up")
    k=$(up_idx "$up")
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.default.disable_ipv6=0 \
        net.ipv6.conf.wan.disable_ipv6=0 net.ipv6.conf.br0.disable_ipv6=0 net.ipv6.conf.lo.disable_ipv6=0 \
        net.ipv6.conf.all.forwarding=1
    ip netns exec "$SB-inet" sysctl -qw "net.ipv6.conf.$up.disable_ipv6=0"
    # No duplicate address detection on the simulated network: addresses usable at once.
    ip -n "$SB-inet" addr add "2001:db8:ff:$k::1/64" dev "$up" nodad
    ip -n "$ns" addr add "2001:db8:ff:$k::2/64" dev wan nodad
    ip -n "$ns" -6 route add default via "2001:db8:ff:$k::1"
    ip -n "$SB-inet" -6 route add "$lan6::/64" via "2001:db8:ff:$k::2"
    # Unknown multicast (neighbour solicitations) is flooded, querier or not.
    ip -n "$ns" link set br0 type bridge mcast_snooping 0
    ip -n "$ns" addr add "$lan6::1/64" dev br0 nodad
    ip -n "$ns" addr add "$lan6:53::1/128" dev lo nodad
    ip -n "$SB-inet" -6 route add "$lan6:53::/64" via "2001:db8:ff:$k::2"
    ip netns exec "$ns" ip6tables -A INPUT -i wan -d "$lan6:53::1" -j DROP
    ip netns exec "$ns" ip6tables -t nat -A POSTROUTING -o wan -j MASQUERADE
    ip netns exec "$ns" ip6tables -A FORWARD -i br0 ! -s "$lan6::/64" -j DROP
    ip netns exec "$ns" ip6tables -A INPUT -i br0 -s "$lan6::/64" -j ACCEPT
    ip netns exec "$ns" ip6tables -A INPUT -i br0 -s 2000::/3 -j DROP
}

shape() { # shape NS PORT IFB: tbf towards the host, and host->ISP via ingress redirect to an ifb
    local ns=$1 port=$2 ifb=$3 burst=${SB_RATE_BURST:-32kbit} lat=${SB_RATE_LATENCY:-50ms}
    tc -n "$ns" qdisc add dev "$port" root tbf rate "$SB_RATE" burst "$burst" latency "$lat"
    ip -n "$ns" link add "$ifb" type ifb
    ip -n "$ns" link set "$ifb" up
    tc -n "$ns" qdisc add dev "$ifb" root tbf rate "$SB_RATE" burst "$burst" latency "$lat"
    tc -n "$ns" qdisc add dev "$port" handle ffff: ingress
    tc -n "$ns" filter add dev "$port" parent ffff: protocol all u32 match u32 0 0 \
        action mirred egress redirect dev "$ifb"
}

# shape_per_address NS PORT IFB LAN: htb with one class per IPv4 address of LAN (.2-.254) at
# SB_RATE_PER_ADDRESS, under one class for the whole port at SB_RATE (unlimited without it).
# Downstream: on the port's egress, by destination address; upstream: the port's ingress is
# redirected to IFB, classified there by source address. Anything else (another address, IPv6,
# ARP) shares one more class at the per-address rate. One `tc -batch` per device (~500 lines).
shape_per_address() {
    local ns=$1 port=$2 ifb=$3 lan=$4 rate=$SB_RATE_PER_ADDRESS dev dir n batch
    local port_rate=${SB_RATE:-10gbit} q=${SB_RATE_QUEUE:-100}
    ip -n "$ns" link add "$ifb" type ifb
    ip -n "$ns" link set "$ifb" up
    for dev in "$port" "$ifb"; do
        dir=dst
        [ "$dev" = "$port" ] || dir=src
        batch="$W/tc-$ns-$dev.batch"
        {
            printf 'qdisc add dev %s root handle 1: htb default fff\n' "$dev"
            printf 'class add dev %s parent 1: classid 1:1 htb rate %s ceil %s quantum 1514\n' \
                "$dev" "$port_rate" "$port_rate"
            printf 'class add dev %s parent 1:1 classid 1:fff htb rate %s ceil %s quantum 1514\n' \
                "$dev" "$rate" "$rate"
            printf 'qdisc add dev %s parent 1:fff pfifo limit %s\n' "$dev" "$q"
            for n in $(seq 2 254); do
                printf 'class add dev %s parent 1:1 classid 1:%x htb rate %s ceil %s quantum 1514\n' \
                    "$dev" "$((0x100 + n))" "$rate" "$rate"
                printf 'qdisc add dev %s parent 1:%x pfifo limit %s\n' "$dev" "$((0x100 + n))" "$q"
                printf 'filter add dev %s parent 1: protocol ip prio 1 u32 match ip %s %s.%s/32 flowid 1:%x\n' \
                    "$dev" "$dir" "$lan" "$n" "$((0x100 + n))"
            done
        } >"$batch"
        tc -n "$ns" -batch "$batch"
    done
    tc -n "$ns" qdisc add dev "$port" handle ffff: ingress
    tc -n "$ns" filter add dev "$port" parent ffff: protocol all u32 match u32 0 0 \
        action mirred egress redirect dev "$ifb"
}

write_keyfile() { # write_keyfile INDEX
    local i=$1 f up lan ac=false
    up=${U_UP[$i]}
    lan=$(up_lan "$up")
    [ "${SB_AUTOCONNECT:-0}" != 1 ] || ac=true
    f="$W/conns/${U_ID[$i]//\//_}.nmconnection"
    {
        printf '[connection]\nid=%s\nuuid=%s\ntype=ethernet\ninterface-name=%s\nautoconnect=%s\n\n' \
            "${U_ID[$i]}" "$(cat /proc/sys/kernel/random/uuid)" "${U_IFACE[$i]}" "$ac"
        printf '[ethernet]\n\n[ipv4]\n'
        if [ "${U_KIND[$i]}" = static ]; then
            printf 'method=manual\naddress1=%s.%s/24,%s.1\ndns=192.0.2.%s;\n' "$lan" "${U_HOST[$i]}" "$lan" "$(up_idx "$up")"
        else
            printf 'method=auto\n'
        fi
        # Fixed, distinct metrics (100, 101, ... in SPEC order): NetworkManager would otherwise
        # bump equal ones depending on activation history, and snapshots would not compare.
        [ "${SB_ROUTE_METRIC:-fixed}" != fixed ] || printf 'route-metric=%s\n' $((100 + i))
        if [ "${SB_IPV6:-0}" != 1 ]; then
            printf '\n[ipv6]\nmethod=disabled\n'
        else
            # Both families required: activation (and the dispatcher's "up") waits for both.
            printf 'may-fail=false\n\n[ipv6]\nmay-fail=false\n'
            [ "${SB_ROUTE_METRIC:-fixed}" != fixed ] || printf 'route-metric=%s\n' $((100 + i))
            if [ "${U_KIND[$i]}" = static ]; then
                printf 'method=manual\naddress1=%s::2/64,%s::1\ndns=%s:53::1;\n' "$(up_lan6 "$up")" "$(up_lan6 "$up")" "$(up_lan6 "$up")"
            else
                printf 'method=auto\n'
            fi
        fi
    } >"$f"
    chmod 0600 "$f"
}

# Runs inside `ip netns exec SB-host unshare -m`: private mounts, private bus, then NetworkManager.
nm_inner() {
    local w=$1 mp i=0 stash svc disp
    mount --make-rprivate /
    # Our copies of other namespaces' /run/netns mounts would keep those namespaces alive.
    umount -l /run/netns 2>/dev/null || true
    # /etc: an overlay so that /etc/nm-multiwan can exist here only. Mounts below /etc (e.g.
    # resolv.conf in containers) would be hidden by it: stash them and put them back.
    stash="$w/ovl/stash"
    awk '$5 ~ "^/etc/" {print $5}' /proc/self/mountinfo | while read -r mp; do
        mkdir -p "$stash"
        if [ -d "$mp" ]; then mkdir "$stash/$i"; else touch "$stash/$i"; fi
        mount --bind "$mp" "$stash/$i"
        printf '%s %s\n' "$i" "$mp" >>"$stash.list"
        i=$((i + 1))
    done
    mount -t overlay sandbox-etc -o "lowerdir=/etc,upperdir=$w/ovl/etc/upper,workdir=$w/ovl/etc/work" /etc
    if [ -f "$stash.list" ]; then
        while read -r i mp; do mount --bind "$stash/$i" "$mp"; done <"$stash.list"
    fi
    mkdir -p /etc/nm-multiwan /etc/NetworkManager/dispatcher.d
    mount --bind "$w/etc-nm-multiwan" /etc/nm-multiwan
    mount --bind "$w/dispatcher.d" /etc/NetworkManager/dispatcher.d
    # nm-dispatcher also runs the scripts packages install under /usr/lib (an installed
    # nm-multiwan package among them): hide them, so only the sandbox's scripts run.
    if [ -d /usr/lib/NetworkManager/dispatcher.d ]; then
        mount --bind "$w/dispatcher-empty" /usr/lib/NetworkManager/dispatcher.d
    fi
    if [ -d "$w/ovl/usrbin/upper" ]; then
        mount -t overlay sandbox-usrbin \
            -o "lowerdir=/usr/bin,upperdir=$w/ovl/usrbin/upper,workdir=$w/ovl/usrbin/work" /usr/bin
    fi
    # A private, empty /run (the real one may hold the machine's bus and NetworkManager state).
    mount --bind "$w/run" /run
    mount --bind "$w/var-lib-NetworkManager" /var/lib/NetworkManager
    # Without udev NetworkManager manages devices only when /sys is read-only (README.md here).
    mount -o remount,bind,ro /sys
    # `ip netns exec` gave us a sysfs of our own, without the cgroup2 file system below it:
    # mounted again (the same hierarchy), for `nm-multiwan run --via`.
    mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true
    # nm-dispatcher, D-Bus-activated, would log to a syslog that isn't there: have the bus start
    # it with --debug and its output (and that of the scripts it runs) in WORK/nm-dispatcher.log.
    svc=/usr/share/dbus-1/system-services/org.freedesktop.nm_dispatcher.service
    if [ -f "$svc" ]; then
        disp=$(sed -n 's/^Exec=//p' "$svc")
        printf '[D-BUS Service]\nName=org.freedesktop.nm_dispatcher\nExec=/bin/sh -c "exec %s --debug >>%s 2>&1"\nUser=root\n' \
            "$disp" "$w/nm-dispatcher.log" >"$w/nm_dispatcher.service"
        mount --bind "$w/nm_dispatcher.service" "$svc"
    fi
    dbus-daemon --system --fork --print-pid >"$w/host.pid"
    if [ -d "$w/rp_filter" ]; then
        exec unshare -m --propagation private "$SELF" __nm-exec "$w"
    fi
    nm_exec "$w"
}

# NetworkManager loosens a strict rp_filter (1 -> 2) on devices with a default route, and the
# kernel uses max(all, device): strict filtering would never happen. With SB_RP_FILTER=1 it
# therefore runs in a mount namespace of its own where those sysctl files are plain files:
# NetworkManager's writes land there, the kernel (and everything else) keeps the strict value.
nm_exec() {
    local w=$1 f
    for f in "$w"/rp_filter/*; do
        [ ! -f "$f" ] || mount --bind "$f" "/proc/sys/net/ipv4/conf/${f##*/}/rp_filter"
    done
    printf '%s\n' "$$" >"$w/nm.pid"
    exec NetworkManager --no-daemon --debug --log-level="${SB_NM_LOG_LEVEL:-INFO}" \
        --config="$w/NetworkManager.conf" --config-dir=/nonexistent \
        --state-file="$w/NetworkManager.state"
}

nm_started() { # the start script wrote the pid file (or died trying)
    [ ! -s "$W/nm.pid" ] || return 0
    kill -0 "$NM_BG" 2>/dev/null || die "NetworkManager's start script failed; see $W/nm.log"
    return 1
}

nm_answers() {
    nm_alive
    nsenter -t "$HOST_PID" -m -n nmcli general >/dev/null 2>&1
}

dev_states() { # IFACE:STATE lines of the host's devices
    nm_alive
    nsenter -t "$HOST_PID" -m -n nmcli -t -f DEVICE,STATE device 2>/dev/null
}

all_devs_in() { # all_devs_in STATE...: every uplink's device is in one of these states
    local states i s
    states=$(dev_states) || return 1
    for i in "${!U_IFACE[@]}"; do
        s=$(printf '%s\n' "$states" | awk -F: -v d="${U_IFACE[$i]}" '$1 == d {print $2}')
        case " $* " in *" $s "*) ;; *) return 1 ;; esac
    done
}

cmd_create() {
    local t0 i up ups='' k dispatcher='' binary='' config='' owner_start=''
    SB=$1
    shift
    check_name "$SB"
    need_root
    cmd_check || die "required commands missing"
    parse_specs "$@"
    W="$SB_ROOT/$SB"
    [ ! -e "$W" ] || die "sandbox '$SB' exists ($W); run: $0 destroy $SB"
    for k in $(all_ns "$SB"); do
        ! ns_exists "$k" || die "namespace $k exists; run: $0 destroy $SB"
    done
    if [ -n "${SB_DISPATCHER:-}" ]; then
        [ -f "$SB_DISPATCHER" ] || die "SB_DISPATCHER=$SB_DISPATCHER: no such file"
        dispatcher=$SB_DISPATCHER
    fi
    if [ -n "${SB_BINARY:-}" ]; then
        { [ -f "$SB_BINARY" ] && [ -x "$SB_BINARY" ]; } || die "SB_BINARY=$SB_BINARY: not an executable file"
        binary=$SB_BINARY
    fi
    if [ -n "${SB_OWNER:-}" ]; then
        case "$SB_OWNER" in *[!0-9]* | '') die "SB_OWNER=$SB_OWNER: not a process id" ;; esac
        owner_start=$(proc_start "$SB_OWNER") || die "SB_OWNER=$SB_OWNER: no such process"
    fi
    if [ -n "${SB_CONFIG:-}" ]; then
        [ -f "$SB_CONFIG" ] || die "SB_CONFIG=$SB_CONFIG: no such file"
        config=$SB_CONFIG
    fi
    if [ -n "${SB_DBUS_POLICY:-}" ]; then
        [ -f "$SB_DBUS_POLICY" ] || die "SB_DBUS_POLICY=$SB_DBUS_POLICY: no such file"
    fi
    t0=$(now_ms)

    mkdir -p "$SB_ROOT"
    mkdir -m 0700 "$W"
    # First of all, so that `reap` can tell a sandbox whose owner died half-way through.
    [ -z "${SB_OWNER:-}" ] || printf '%s %s\n' "$SB_OWNER" "$owner_start" >"$W/owner"
    # From here on a failure removes the half-built sandbox (unless SB_KEEP=1).
    trap 'create_exit' EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$W/log" "$W/conns" "$W/run/dbus" "$W/run/NetworkManager" "$W/run/nm-multiwan" \
        "$W/run/lock" "$W/var-lib-NetworkManager" "$W/etc-nm-multiwan" "$W/ovl/etc/upper" \
        "$W/ovl/etc/work" "$W/dispatcher.d/no-wait.d" "$W/dispatcher.d/pre-up.d" \
        "$W/dispatcher.d/pre-down.d" "$W/dispatcher-empty"
    chmod 0700 "$W/conns"
    printf '%s\n' "$@" >"$W/specs"
    : >"$W/dispatcher.log"
    chmod 0644 "$W/dispatcher.log"

    # Namespaces. The host's sysctls first: new interfaces copy conf.default.
    ip netns add "$SB-host"
    ip -n "$SB-host" link set lo up
    local no6=1
    [ "${SB_IPV6:-0}" != 1 ] || no6=0
    ip netns exec "$SB-host" sysctl -qw net.ipv4.conf.all.rp_filter="${SB_RP_FILTER:-1}" \
        net.ipv4.conf.default.rp_filter="${SB_RP_FILTER:-1}" net.ipv6.conf.all.disable_ipv6=$no6 \
        net.ipv6.conf.default.disable_ipv6=$no6
    ip netns add "$SB-inet"
    ip -n "$SB-inet" link set lo up
    ip -n "$SB-inet" addr add "$SERVER/32" dev lo
    ip netns exec "$SB-inet" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv6.conf.all.disable_ipv6=$no6 net.ipv6.conf.default.disable_ipv6=$no6
    if [ "$no6" = 0 ]; then
        ip netns exec "$SB-inet" sysctl -qw net.ipv6.conf.all.forwarding=1 net.ipv6.conf.lo.disable_ipv6=0
        ip -n "$SB-inet" addr add "$SERVER6/128" dev lo nodad
    fi
    for up in "${U_UP[@]}"; do
        case " $ups " in *" $up "*) ;; *) ups="$ups $up" ;; esac
    done
    for up in $ups; do
        setup_upstream "$up"
    done
    for i in "${!U_IFACE[@]}"; do
        ip netns exec "$SB-host" sysctl -qw "net.ipv4.conf.${U_IFACE[$i]//./\/}.rp_filter=${SB_RP_FILTER:-1}"
        if [ "${SB_RP_FILTER:-1}" = 1 ] && [ "${SB_NM_LOOSENS_RP_FILTER:-0}" != 1 ]; then
            mkdir -p "$W/rp_filter"
            printf '1\n' >"$W/rp_filter/${U_IFACE[$i]}"
        fi
    done

    # Internet servers.
    spawn "$SB-inet" echo-inet python3 "$SELF_DIR/peer_server.py" "$SERVER" 7000
    spawn "$SB-inet" hold-inet python3 "$SELF_DIR/peer_server.py" "$SERVER" 7002 --echo
    spawn "$SB-inet" zero-inet socat -U TCP-LISTEN:7001,bind="$SERVER",fork,reuseaddr OPEN:/dev/zero
    spawn "$SB-inet" stream-inet python3 "$SELF_DIR/peer_server.py" "$SERVER" 7003 --stream
    spawn "$SB-inet" udp-inet python3 "$SELF_DIR/udp_server.py" "$SERVER" 7000 443
    # More destinations (198.51.100.11-19), for what tells destinations apart.
    local more=''
    for k in 11 12 13 14 15 16 17 18 19; do
        ip -n "$SB-inet" addr add "198.51.100.$k/32" dev lo
        more="$more${more:+,}198.51.100.$k"
    done
    spawn "$SB-inet" echo-more python3 "$SELF_DIR/peer_server.py" 0.0.0.0 7010
    spawn "$SB-inet" udp-more python3 "$SELF_DIR/udp_server.py" "$more" 7010
    if [ "${SB_IPV6:-0}" = 1 ]; then
        spawn "$SB-inet" echo6-inet python3 "$SELF_DIR/peer_server.py" "$SERVER6" 7000
        spawn "$SB-inet" zero6-inet socat -U TCP6-LISTEN:7001,bind="[$SERVER6]",fork,reuseaddr OPEN:/dev/zero
        spawn "$SB-inet" hold6-inet python3 "$SELF_DIR/peer_server.py" "$SERVER6" 7002 --echo
        spawn "$SB-inet" udp6-inet python3 "$SELF_DIR/udp_server.py" "$SERVER6" 7000 443
    fi
    for k in 1 2 3 4 5 6 7 8; do
        spawn "$SB-inet" "iperf3-520$k" iperf3 -s -B "$SERVER" -p "520$k"
    done

    # NetworkManager's private world.
    cat >"$W/NetworkManager.conf" <<EOF
[main]
plugins=keyfile
dhcp=internal
dns=none
rc-manager=unmanaged
no-auto-default=*
auth-polkit=false

[keyfile]
path=$W/conns
unmanaged-devices=none

[device]
match-device=*
managed=1

[connectivity]
enabled=false

EOF
    # What the packages install into NetworkManager's conf.d (the sandbox's NetworkManager
    # reads this one file only).
    cat "$SELF_DIR/../../packaging/NetworkManager/90-nm-multiwan.conf" >>"$W/NetworkManager.conf"
    for i in "${!U_IFACE[@]}"; do
        write_keyfile "$i"
    done
    if [ -n "$dispatcher" ]; then
        install -o root -g root -m 0755 "$dispatcher" "$W/dispatcher.d/$(basename "$dispatcher")"
    fi
    cat >"$W/dispatcher.d/zzzz-sandbox-marker" <<EOF
#!/bin/sh
# Installed by sandbox.sh. Runs after every other script of an event (name order), so its
# line means they have all finished: "ACTION IFACE CONNECTION_ID".
printf '%s %s %s\\n' "\$2" "\$1" "\${CONNECTION_ID:-}" >>'$W/dispatcher.log'
EOF
    chown root:root "$W/dispatcher.d/zzzz-sandbox-marker"
    chmod 0755 "$W/dispatcher.d/zzzz-sandbox-marker"
    if [ -n "$config" ]; then
        install -m 0644 "$config" "$W/etc-nm-multiwan/config.toml"
    fi
    if [ -n "${SB_DBUS_POLICY:-}" ]; then
        # The private /etc is an overlay with this upper dir: the file shows up in
        # /etc/dbus-1/system.d there only, before the private dbus-daemon reads its config.
        install -D -m 0644 "$SB_DBUS_POLICY" \
            "$W/ovl/etc/upper/dbus-1/system.d/$(basename "$SB_DBUS_POLICY")"
    fi
    if [ -n "$binary" ]; then
        # A copy, not a link: a link into a checkout under a 0700 home directory would
        # be unreachable for every user but root (the daemon tests run it as nobody).
        mkdir -p "$W/ovl/usrbin/upper" "$W/ovl/usrbin/work"
        cp --reflink=auto -- "$binary" "$W/ovl/usrbin/upper/nm-multiwan"
        chmod 0755 "$W/ovl/usrbin/upper/nm-multiwan"
    fi
    ip netns exec "$SB-host" setsid unshare -m --propagation private "$SELF" __nm-inner "$W" \
        </dev/null >>"$W/nm.log" 2>&1 &
    NM_BG=$!
    printf '%s %s %s\n' "$NM_BG" "$SB-host" NetworkManager >>"$W/pids"

    wait_until 10 nm_started ||
        die "NetworkManager's start script did not get to NetworkManager within 10 s; see $W/nm.log"
    nm_pid "$SB"
    wait_until 20 nm_answers || die "NetworkManager did not answer within 20 s; see $W/nm.log"
    if [ "${SB_AUTOCONNECT:-0}" = 1 ]; then
        wait_until 30 all_devs_in connected ||
            die "uplinks not all connected within 30 s: $(dev_states | tr '\n' ' '); see $W/nm.log"
    else
        wait_until 10 all_devs_in disconnected connected connecting ||
            die "devices not all managed within 10 s: $(dev_states | tr '\n' ' '); see $W/nm.log"
    fi
    for k in 7000 7001 7002 7003 5201 5202 5203 5204 5205 5206 5207 5208; do
        wait_until 5 listening "$SB-inet" tcp "$k" || die "no server on $SERVER:$k in $SB-inet; see $W/log/"
    done
    if [ "${SB_IPV6:-0}" = 1 ]; then
        for k in 7000 7001 7002; do
            wait_until 5 listening "$SB-inet" tcp "$k" 6 || die "no server on [$SERVER6]:$k in $SB-inet; see $W/log/"
        done
    fi
    for k in 7000 443 7010; do
        wait_until 5 listening "$SB-inet" udp "$k" || die "no UDP server on port $k in $SB-inet; see $W/log/"
    done
    wait_until 5 listening "$SB-inet" tcp 7010 || die "no server on port 7010 in $SB-inet; see $W/log/"
    for up in $ups; do
        wait_until 5 listening "$SB-$up" udp 53 || die "no resolver in $SB-$up; see $W/log/dns-$up.log"
        wait_until 5 listening "$SB-$up" tcp 7000 || die "no server on port 7000 in $SB-$up; see $W/log/"
        if [ "${SB_IPV6:-0}" = 1 ]; then
            wait_until 5 listening "$SB-$up" tcp 7000 6 || die "no IPv6 server on port 7000 in $SB-$up; see $W/log/"
        fi
        case " ${U_KIND[*]} " in *" dhcp "* | *" campus "*) ;; *) continue ;; esac
        if [ -f "$W/log/dnsmasq-$up.log" ]; then
            wait_until 5 listening "$SB-$up" udp 67 || die "dnsmasq not listening in $SB-$up; see $W/log/dnsmasq-$up.log"
        fi
    done
    CREATED=1
    say "sandbox '$SB' ready in $(($(now_ms) - t0)) ms (work dir $W)"
}

create_exit() {
    local rc=$?
    [ "$CREATED" = 1 ] && return 0
    trap - EXIT
    if [ "${SB_KEEP:-0}" = 1 ]; then
        say "create failed; keeping sandbox '$SB' (SB_KEEP=1); $0 destroy $SB removes it"
    else
        say "create failed; removing the half-built sandbox '$SB' (SB_KEEP=1 keeps it)"
        if [ -s "$W/nm.log" ]; then
            say "last lines of NetworkManager's log:"
            tail -n 15 "$W/nm.log" >&2 || true
        fi
        SB_QUIET=1 cmd_destroy "$SB" || true
    fi
    exit "$rc"
}

# --- using a sandbox ----------------------------------------------------------------------

conn_iface() { # conn_iface SB CONN: sets CONN_IFACE
    nm_pid "$1"
    CONN_IFACE=$(nsenter -t "$HOST_PID" -m -n nmcli -g connection.interface-name connection show "$2") ||
        die "no connection '$2' in sandbox '$1' (see: $PROG exec $1 nmcli connection)"
    [ -n "$CONN_IFACE" ] || die "connection '$2' has no interface-name"
}

dispatcher_saw() { # dispatcher_saw FILE SKIP ACTION IFACE: a marker line after the first SKIP
    tail -n "+$(($2 + 1))" "$1" | awk -v a="$3" -v d="$4" '$1 == a && $2 == d {f = 1} END {exit !f}'
}

dev_activated() { # dev_activated IFACE (after nm_pid)
    nm_alive
    [ "$(nsenter -t "$HOST_PID" -m -n nmcli -g GENERAL.STATE device show "$1" 2>/dev/null)" = "100 (connected)" ]
}

cmd_wait_updown() { # cmd_wait_updown up|down SB CONN [TIMEOUT]
    local action=$1 sb=$2 conn=$3 timeout=${4:-30} iface skip log
    check_name "$sb"
    SB=$sb
    case "$timeout" in '' | *[!0-9]*) die "wait-$action: TIMEOUT must be whole seconds, got '$timeout'" ;; esac
    log="$SB_ROOT/$sb/dispatcher.log"
    conn_iface "$sb" "$conn"
    iface=$CONN_IFACE
    skip=$(wc -l <"$log")
    in_host "$sb" nmcli --wait "$timeout" connection "$action" "$conn" >/dev/null ||
        die "nmcli connection $action '$conn' failed; see $SB_ROOT/$sb/nm.log"
    if [ "$action" = up ]; then
        wait_until "$timeout" dev_activated "$iface" ||
            die "device $iface of '$conn' not activated within ${timeout}s"
    fi
    wait_until "$timeout" dispatcher_saw "$log" "$skip" "$action" "$iface" ||
        die "dispatcher did not finish '$action $iface' within ${timeout}s; see $log"
}

cmd_wait_for() { # cmd_wait_for SB TIMEOUT CMD...
    local sb=$1 timeout=$2 deadline
    shift 2
    check_name "$sb"
    case "$timeout" in '' | *[!0-9.]*) die "wait-for: TIMEOUT must be seconds, got '$timeout'" ;; esac
    [ "$#" -gt 0 ] || die "wait-for: no command"
    deadline=$(($(now_ms) + $(awk -v t="$timeout" 'BEGIN {printf "%d", t * 1000}')))
    SB=$sb
    nm_pid "$sb"
    until nsenter -t "$HOST_PID" -m -n --wd="$(host_wd)" -- "$@" >/dev/null 2>&1; do
        nm_alive
        if [ "$(now_ms)" -ge "$deadline" ]; then
            die "timed out after ${timeout}s waiting for: $*"
        fi
        sleep 0.1
    done
}

pid_gone() { # pid_gone PID: exited (or a zombie nobody reaps yet)
    [ ! -d "/proc/$1" ] || [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

cmd_restart_nm() { # cmd_restart_nm [--reboot] SB [TIMEOUT]
    local reboot=0 sb timeout old link ifaces
    if [ "$1" = --reboot ]; then
        reboot=1
        shift
    fi
    sb=$1
    timeout=${2:-20}
    check_name "$sb"
    need_root
    case "$timeout" in '' | *[!0-9]*) die "restart-nm: TIMEOUT must be whole seconds, got '$timeout'" ;; esac
    SB=$sb
    W="$SB_ROOT/$sb"
    nm_pid "$sb"
    old=$NM_PID
    kill -TERM "$old"
    if ! wait_until 10 pid_gone "$old"; then
        kill -KILL "$old" 2>/dev/null || true
        wait_until 5 pid_gone "$old" || die "NetworkManager (pid $old) does not stop"
    fi
    rm -f "$W/nm.pid"
    if [ "$reboot" = 1 ]; then
        # Every link but loopback and the uplinks' veths was created by NetworkManager (or by
        # hand): gone after a reboot. The veths stand for NICs: they stay, unconfigured.
        ifaces=" lo $(sed 's/:.*//' "$W/specs" | tr '\n' ' ') "
        for link in $(ip -n "$SB-host" -o link show | awk -F': ' '{print $2}' | sed 's/@.*//'); do
            case "$ifaces" in
                *" $link "*) ;;
                *) ip -n "$SB-host" link del "$link" ;;
            esac
        done
        for link in $ifaces; do
            [ "$link" != lo ] || continue
            ip -n "$SB-host" addr flush dev "$link"
            ip -n "$SB-host" link set "$link" down
        done
        ip -n "$SB-host" route flush table main
        find "$W/run/NetworkManager" -mindepth 1 -delete
    fi
    # As nm_inner starts it: in the private mount namespace (entered through the private
    # dbus-daemon), with a mount namespace of its own when rp_filter is kept strict.
    if [ -d "$W/rp_filter" ]; then
        nsenter -t "$HOST_PID" -m -n -- setsid unshare -m --propagation private "$SELF" __nm-exec "$W" \
            </dev/null >>"$W/nm.log" 2>&1 &
    else
        nsenter -t "$HOST_PID" -m -n -- setsid "$SELF" __nm-exec "$W" </dev/null >>"$W/nm.log" 2>&1 &
    fi
    NM_BG=$!
    printf '%s %s %s\n' "$NM_BG" "$SB-host" NetworkManager >>"$W/pids"
    wait_until 10 nm_started ||
        die "NetworkManager's start script did not get to NetworkManager within 10 s; see $W/nm.log"
    nm_pid "$sb"
    wait_until "$timeout" nm_answers || die "NetworkManager did not answer within ${timeout} s; see $W/nm.log"
    say "NetworkManager of '$sb' restarted (pid $old -> $NM_PID)"
}

cmd_lanhost() { # cmd_lanhost SB K ADDR4/PREFIX [ADDR6/PREFIX]
    local sb=$1 k=$2 a4=$3 a6=${4:-} ns up
    check_name "$sb"
    need_root
    case "$k" in [1-8]) ;; *) die "lanhost: K must be 1..8, got '$k'" ;; esac
    up="$sb-isp$k"
    ns="$sb-lan$k"
    ns_exists "$up" || die "lanhost: no ISP $k in sandbox '$sb'"
    ! ns_exists "$ns" || die "lanhost: $ns exists"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$up" link add "lanhost" type veth peer name eth0 netns "$ns"
    ip -n "$up" link set lanhost master br0
    ip -n "$up" link set lanhost up
    ip -n "$ns" addr add "$a4" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "10.200.$k.1"
    if [ -n "$a6" ]; then
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0 net.ipv6.conf.eth0.disable_ipv6=0 \
            net.ipv6.conf.eth0.accept_ra=0
        ip -n "$ns" addr add "$a6" dev eth0 nodad
        ip -n "$ns" -6 route add default via "$(up_lan6 "isp$k")::1"
    fi
    say "LAN host $ns on ISP $k: $a4 ${a6}"
}

cmd_loss() { # cmd_loss SB UP PCT
    local sb=$1 up=$2 pct=$3 ns="$1-$2"
    check_name "$sb"
    need_root
    ns_exists "$ns" || die "loss: no upstream '$up' in sandbox '$sb' (isp1..isp8, campus)"
    case "$pct" in [0-9] | [1-9][0-9] | 100) ;; *) die "loss: PCT must be 0..100, got '$pct'" ;; esac
    ip netns exec "$ns" nft delete table inet sandbox_loss 2>/dev/null || true
    [ "$pct" != 0 ] || return 0
    ip netns exec "$ns" nft -f - <<EOF
table inet sandbox_loss {
    chain pre {
        type filter hook prerouting priority -300; policy accept;
        numgen random mod 100 < $pct drop
    }
    chain out {
        type filter hook output priority -300; policy accept;
        numgen random mod 100 < $pct drop
    }
}
EOF
    say "$up drops $pct % of its packets"
}

cmd_slow_echo() { # cmd_slow_echo SB UP MIN|off [MAX]
    local sb=$1 up=$2 min=$3 max=${4:-$3} ns="$1-$2" w pidfile has6=0
    check_name "$sb"
    need_root
    w="$SB_ROOT/$sb"
    ns_exists "$ns" || die "slow-echo: no upstream '$up' in sandbox '$sb' (isp1..isp8, campus)"
    pidfile="$w/slow-echo-$up.pid"
    [ "$(ip netns exec "$ns" sysctl -n net.ipv6.conf.lo.disable_ipv6 2>/dev/null)" != 0 ] || has6=1
    if [ "$min" = off ]; then
        if [ -s "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
        fi
        ip -n "$ns" addr del "$PROBE/32" dev lo 2>/dev/null || true
        [ "$has6" = 0 ] || ip -n "$ns" addr del "$PROBE6/128" dev lo 2>/dev/null || true
        ip netns exec "$ns" sysctl -qw net.ipv4.icmp_echo_ignore_all=0
        [ "$has6" = 0 ] || ip netns exec "$ns" sysctl -qw net.ipv6.icmp.echo_ignore_all=0
        say "$up: no slow probe target"
        return 0
    fi
    case "$min$max" in *[!0-9]*) die "slow-echo: MIN and MAX are milliseconds, got '$min' '$max'" ;; esac
    [ "$min" -le "$max" ] || die "slow-echo: MIN $min is above MAX $max"
    printf '%s %s\n' "$min" "$max" >"$w/slow-echo-$up.delay"
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "$up: probe target answers after $min..$max ms"
        return 0
    fi
    ip netns exec "$ns" sysctl -qw net.ipv4.icmp_echo_ignore_all=1
    ip -n "$ns" addr replace "$PROBE/32" dev lo
    local a6=()
    if [ "$has6" = 1 ]; then
        ip netns exec "$ns" sysctl -qw net.ipv6.icmp.echo_ignore_all=1
        ip -n "$ns" addr replace "$PROBE6/128" dev lo nodad
        a6=("$PROBE6")
    fi
    W=$w
    rm -f "$w/slow-echo-$up.delay.ready"
    spawn "$ns" "slow-echo-$up" python3 "$SELF_DIR/slow_echo.py" "$w/slow-echo-$up.delay" "$PROBE" "${a6[@]}"
    tail -n 1 "$w/pids" | cut -d' ' -f1 >"$pidfile"
    wait_until 10 test -e "$w/slow-echo-$up.delay.ready" ||
        die "slow-echo: the responder in $ns did not start; see $w/log/slow-echo-$up.log"
    say "$up: probe target $PROBE answers after $min..$max ms"
}

cmd_info() {
    local sb=$1 w="$SB_ROOT/$1"
    check_name "$sb"
    [ -d "$w" ] || die "no sandbox '$sb' ($w missing)"
    printf 'workdir=%s\n' "$w"
    printf 'owner=%s\n' "$(cut -d' ' -f1 "$w/owner" 2>/dev/null || true)"
    printf 'nm_pid=%s\n' "$(cat "$w/nm.pid" 2>/dev/null || true)"
    printf 'host_pid=%s\n' "$(cat "$w/host.pid" 2>/dev/null || true)"
    printf 'keyfiles=%s\n' "$w/conns"
    printf 'nm_log=%s\n' "$w/nm.log"
    printf 'dispatcher_log=%s\n' "$w/dispatcher.log"
    printf 'nm_dispatcher_log=%s\n' "$w/nm-dispatcher.log"
    printf 'config=%s\n' "$w/etc-nm-multiwan/config.toml"
    printf 'run_dir=%s\n' "$w/run/nm-multiwan"
    printf 'specs=%s\n' "$(tr '\n' ' ' <"$w/specs" 2>/dev/null || true)"
    printf 'namespaces=%s\n' "$(for n in $(all_ns "$sb"); do ! ns_exists "$n" || printf '%s ' "$n"; done)"
}

cmd_list() {
    { ls "$SB_ROOT" 2>/dev/null || true; ip netns list 2>/dev/null | awk '{print $1}' |
        sed -n 's/^\([A-Za-z0-9_]*\)-\(host\|inet\|campus\|isp[1-8]\|lan[1-8]\)$/\1/p'; } | sort -u
}

cmd_reap() {
    local sb w
    need_root
    mkdir -p "$SB_ROOT"
    # One reaper at a time (test runs start theirs together).
    exec 9>"$SB_ROOT/.reap.lock"
    flock 9
    for sb in $(cmd_list); do
        w="$SB_ROOT/$sb"
        # No owner recorded: someone's own sandbox, not ours to judge.
        [ -f "$w/owner" ] || continue
        owner_alive "$w" && continue
        printf '%s: destroying sandbox %s: its owner (pid %s) is gone\n' "$PROG" "$sb" \
            "$(cut -d' ' -f1 "$w/owner")" >&2
        (cmd_destroy "$sb") || printf '%s: could not destroy %s\n' "$PROG" "$sb" >&2
    done
}

main() {
    [ "$#" -gt 0 ] || usage
    local cmd=$1
    shift
    case "$cmd" in
        create)
            [ "$#" -ge 2 ] || die "usage: $0 create SB SPEC..."
            cmd_create "$@"
            ;;
        destroy)
            [ "$#" = 1 ] || die "usage: $0 destroy SB"
            cmd_destroy "$1"
            ;;
        exec)
            [ "$#" -ge 2 ] || die "usage: $0 exec SB CMD..."
            check_name "$1"
            nm_pid "$1"
            shift
            exec nsenter -t "$HOST_PID" -m -n --wd="$(host_wd)" -- "$@"
            ;;
        exec-ns)
            [ "$#" -ge 3 ] || die "usage: $0 exec-ns SB NAME CMD..."
            check_name "$1"
            ns_exists "$1-$2" || die "no namespace $1-$2"
            local ns="$1-$2"
            shift 2
            exec ip netns exec "$ns" "$@"
            ;;
        wait-up | wait-down)
            { [ "$#" -ge 2 ] && [ "$#" -le 3 ]; } || die "usage: $0 $cmd SB CONNECTION [TIMEOUT]"
            cmd_wait_updown "${cmd#wait-}" "$@"
            ;;
        wait-for)
            [ "$#" -ge 3 ] || die "usage: $0 wait-for SB TIMEOUT CMD..."
            cmd_wait_for "$@"
            ;;
        restart-nm)
            { [ "$#" -ge 1 ] && [ "$#" -le 3 ]; } || die "usage: $0 restart-nm [--reboot] SB [TIMEOUT]"
            cmd_restart_nm "$@"
            ;;
        lanhost)
            { [ "$#" -ge 3 ] && [ "$#" -le 4 ]; } || die "usage: $0 lanhost SB K ADDR4/PREFIX [ADDR6/PREFIX]"
            cmd_lanhost "$@"
            ;;
        loss)
            [ "$#" = 3 ] || die "usage: $0 loss SB UPSTREAM PCT"
            cmd_loss "$@"
            ;;
        slow-echo)
            { [ "$#" -ge 3 ] && [ "$#" -le 4 ]; } || die "usage: $0 slow-echo SB UPSTREAM MIN_MS [MAX_MS] | off"
            cmd_slow_echo "$@"
            ;;
        info)
            [ "$#" = 1 ] || die "usage: $0 info SB"
            cmd_info "$1"
            ;;
        list) cmd_list ;;
        reap)
            [ "$#" = 0 ] || die "usage: $0 reap"
            cmd_reap
            ;;
        check) cmd_check && say "all required commands present" ;;
        __nm-inner) nm_inner "$@" ;;
        __nm-exec) nm_exec "$@" ;;
        -h | --help | help) usage ;;
        *) die "unknown subcommand '$cmd' (try: $0 help)" ;;
    esac
}

main "$@"
