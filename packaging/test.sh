#!/usr/bin/env bash
# CI test of the distribution packages, on a fresh Debian 12 machine as root:
# builds both packages with packaging/build.sh, installs the .deb for real (dpkg -i),
# checks every file, owner and mode, runs the installed binary, removes and purges it
# and checks nothing is left; then checks the Arch package carries the same files.
# Ends with "N passed, M failed"; exit status 1 if anything failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export DEBIAN_FRONTEND=noninteractive
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
started=$SECONDS

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok    %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL  %s\n' "$*"; }
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
finish() {
    printf '%d passed, %d failed (%ds)\n' "$passed" "$failed" $((SECONDS - started))
    [ "$failed" = 0 ]
    exit $?
}

[ "$(id -u)" = 0 ] || { echo "packaging/test.sh: run as root (it installs the package)" >&2; exit 1; }

# Installing puts a dispatcher hook into the real NetworkManager: always purge again,
# and put back a configuration this test had to move out of the way.
tmp=$(mktemp -d /tmp/nm-multiwan-pkgtest.XXXXXX)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if dpkg-query -W -f='${Status}' nm-multiwan 2>/dev/null | grep -q 'installed\|config-files'; then
        dpkg -P nm-multiwan >/dev/null 2>&1 || true
    fi
    if [ -d "$tmp/etc-backup" ]; then
        rm -rf /etc/nm-multiwan
        mv "$tmp/etc-backup" /etc/nm-multiwan
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

echo "== tools"
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends \
    ca-certificates curl git gcc libc6-dev binutils dpkg-dev gzip zstd libarchive-tools \
    makepkg pacman-package-manager fakeroot man-db iproute2 desktop-file-utils >/dev/null ||
    { bad "apt-get install of the test tools"; finish; }

echo "== build (packaging/build.sh)"
if bash packaging/build.sh; then ok "packaging/build.sh"; else bad "packaging/build.sh"; finish; fi
shopt -s nullglob
debs=(target/packages/nm-multiwan_*.deb)
pkgs=(target/packages/nm-multiwan-*.pkg.tar.zst)
check "exactly one .deb in target/packages" [ ${#debs[@]} = 1 ]
check "exactly one .pkg.tar.zst in target/packages" [ ${#pkgs[@]} = 1 ]
if [ ${#debs[@]} != 1 ] || [ ${#pkgs[@]} != 1 ]; then finish; fi
deb=${debs[0]}
pkg=${pkgs[0]}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)

# Path (Debian) and mode of every file both packages install.
expected="\
/usr/bin/nm-multiwan 755
/usr/lib/NetworkManager/dispatcher.d/90-nm-multiwan 755
/usr/lib/NetworkManager/conf.d/90-nm-multiwan.conf 644
/usr/lib/systemd/system/nm-multiwan.service 644
/usr/share/dbus-1/system.d/net.nmmultiwan.Daemon1.conf 644
/usr/share/man/man1/nm-multiwan.1.gz 644
/usr/share/bash-completion/completions/nm-multiwan 644
/usr/share/zsh/vendor-completions/_nm-multiwan 644
/usr/share/fish/vendor_completions.d/nm-multiwan.fish 644
/usr/share/doc/nm-multiwan/config.example.toml 644
/usr/share/doc/nm-multiwan/copyright 644
/etc/xdg/autostart/nm-multiwan-notify.desktop 644"
# Conffiles: dpkg -r keeps them, dpkg -P removes them.
conffiles="/etc/xdg/autostart/nm-multiwan-notify.desktop"

# "path mode owner:group" of the regular files in a package's data, sorted.
# Directories and Arch's metadata (.PKGINFO, .MTREE, ...) are left out.
listing() {
    bsdtar -tvf "$1" | awk '$1 ~ /^-/ {
        path = $NF; sub(/^\.\//, "", path); sub(/^/, "/", path)
        if (path ~ /^\/\./) next
        mode = 0; perm = substr($1, 2, 9)
        for (i = 1; i <= 9; i++) { mode = mode * 2 + (substr(perm, i, 1) != "-") }
        own = ($3 == "0" ? "root" : $3); grp = ($4 == "0" ? "root" : $4)
        printf "%s %o %s:%s\n", path, mode, own, grp
    }' | sort
}

echo "== .deb metadata"
depends=$(dpkg-deb -f "$deb" Depends)
check "Depends has network-manager ($depends)" grep -qw 'network-manager' <<<"$depends"
check "Depends has iptables" grep -qw 'iptables' <<<"$depends"
check "section net" [ "$(dpkg-deb -f "$deb" Section)" = net ]
dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles >"$tmp/conffiles" 2>/dev/null
check "conffiles are exactly: $conffiles" [ "$(sort "$tmp/conffiles")" = "$conffiles" ]
check "version $version" [ "$(dpkg-deb -f "$deb" Version)" = "$version-1" ]
dpkg-deb --fsys-tarfile "$deb" >"$tmp/data.tar"
listing "$tmp/data.tar" >"$tmp/deb.list"
awk '{ print $1 " " $2 " root:root" }' <<<"$expected" | sort >"$tmp/expected.list"
if diff -u "$tmp/expected.list" "$tmp/deb.list"; then
    ok ".deb holds exactly the expected files, modes and root:root owners"
else
    bad ".deb file list (diff above: - expected, + in the package)"
fi

echo "== dpkg -i"
if dpkg-query -W -f='${Status}' nm-multiwan 2>/dev/null | grep -q 'installed\|config-files'; then
    dpkg -P nm-multiwan >/dev/null
fi
if [ -e /etc/nm-multiwan ]; then mv /etc/nm-multiwan "$tmp/etc-backup"; fi
apt-get install -y -q --no-install-recommends network-manager iptables >/dev/null
check "dpkg -i $deb" dpkg -i "$deb"
check "dpkg says installed" bash -c "dpkg-query -W -f='\${Status}' nm-multiwan | grep -qx 'install ok installed'"
while read -r path mode; do
    check "$path is a root:root $mode file" \
        [ "$(stat -c '%F %U:%G %a' "$path" 2>&1)" = "regular file root:root $mode" ]
    check "$path belongs to nm-multiwan" bash -c "dpkg -S '$path' | grep -q '^nm-multiwan: '"
done <<<"$expected"

echo "== installed files work"
out=$(/usr/bin/nm-multiwan --version 2>&1)
check "nm-multiwan --version says $version ($out)" [ "$out" = "nm-multiwan $version" ]
check "nm-multiwan --help" bash -c '/usr/bin/nm-multiwan --help | grep -q "^Usage: nm-multiwan"'
printf 'mark_mask = "0x5"\n' >"$tmp/bad.toml"
/usr/bin/nm-multiwan --config "$tmp/bad.toml" plan >/dev/null 2>"$tmp/err"
rc=$?
check "plan with a bad config fails with 2, naming the file (got $rc)" \
    bash -c "[ $rc = 2 ] && grep -q '$tmp/bad.toml' '$tmp/err'"
check "man page is gzip and renders with man -l" \
    bash -c 'gzip -t /usr/share/man/man1/nm-multiwan.1.gz &&
             man -l /usr/share/man/man1/nm-multiwan.1.gz 2>/dev/null | grep -q "nm-multiwan"'
check "man page documents the subcommands" \
    bash -c 'zcat /usr/share/man/man1/nm-multiwan.1.gz | grep -q "flush"'
check "bash completion loads" \
    bash -c '. /usr/share/bash-completion/completions/nm-multiwan && complete -p nm-multiwan >/dev/null'
check "zsh completion is a compdef" grep -q '^#compdef nm-multiwan' /usr/share/zsh/vendor-completions/_nm-multiwan
check "fish completion completes nm-multiwan" grep -q '^complete -c nm-multiwan' \
    /usr/share/fish/vendor_completions.d/nm-multiwan.fish
d=/usr/lib/NetworkManager/dispatcher.d/90-nm-multiwan
check "dispatcher script is the repo's dispatcher.d/90-nm-multiwan" cmp -s "$d" dispatcher.d/90-nm-multiwan
check "dispatcher script: #!/bin/sh, one comment, exec with quoted arguments" bash -c "
    [ \$(wc -l <'$d') = 3 ] && [ \"\$(sed -n 1p '$d')\" = '#!/bin/sh' ] &&
    sed -n 2p '$d' | grep -q '^# ' &&
    [ \"\$(sed -n 3p '$d')\" = 'exec /usr/bin/nm-multiwan dispatch \"\$1\" \"\$2\"' ]"
check "dispatcher script parses as POSIX sh" sh -n "$d"
s=/usr/lib/systemd/system/nm-multiwan.service
check "unit runs the daemon" grep -qx 'ExecStart=/usr/bin/nm-multiwan daemon' "$s"
check "unit keeps only CAP_NET_ADMIN CAP_NET_RAW" grep -qx 'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW' "$s"
check "unit: ProtectSystem=strict, RuntimeDirectory, no ProtectKernelTunables" bash -c "
    grep -qx 'ProtectSystem=strict' '$s' && grep -qx 'RuntimeDirectory=nm-multiwan' '$s' &&
    ! grep -q '^ProtectKernelTunables' '$s'"
if command -v systemd-analyze >/dev/null; then
    # Only complaints about our unit count (others may be missing in a container).
    check "systemd-analyze verify accepts the unit" bash -c "
        systemd-analyze verify '$s' 2>&1 | tee '$tmp/verify' | (! grep -q nm-multiwan)"
    [ -s "$tmp/verify" ] && sed 's/^/      /' "$tmp/verify"
fi
p=/usr/share/dbus-1/system.d/net.nmmultiwan.Daemon1.conf
if command -v dbus-daemon >/dev/null; then
    # A private bus with only our policy: dbus-daemon refuses to start on a bad one.
    cat >"$tmp/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$tmp/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow user="*"/></policy>
  <include>$p</include>
</busconfig>
EOF
    if bus_pid=$(dbus-daemon --config-file="$tmp/bus.conf" --fork --print-pid 2>"$tmp/dbus.err"); then
        ok "dbus-daemon loads the D-Bus policy"
        kill "$bus_pid" 2>/dev/null
    else
        bad "dbus-daemon loads the D-Bus policy: $(cat "$tmp/dbus.err")"
    fi
fi
check "D-Bus policy: only root owns net.nmmultiwan.Daemon1, Reload and Reconcile are root's" bash -c "
    grep -q '<policy user=\"root\">' '$p' && grep -q '<deny own=\"net.nmmultiwan.Daemon1\"/>' '$p' &&
    [ \$(grep -c 'send_member=\"Reload\"' '$p') = 1 ] && [ \$(grep -c 'send_member=\"Reconcile\"' '$p') = 1 ] &&
    grep -q 'send_member=\"Status\"' '$p'"
check "example config is there" grep -q '^#mark_mask = "0x3f000000"' /usr/share/doc/nm-multiwan/config.example.toml
a=/etc/xdg/autostart/nm-multiwan-notify.desktop
check "autostart entry is the repo's" cmp -s "$a" packaging/nm-multiwan-notify.desktop
check "autostart entry runs nm-multiwan notify" grep -qx 'Exec=/usr/bin/nm-multiwan notify' "$a"
check "desktop-file-validate accepts the autostart entry" desktop-file-validate "$a"
check "D-Bus policy: anyone may receive UplinksChanged, only root send it" bash -c "
    grep -q 'receive_member=\"UplinksChanged\"' '$p' && grep -q 'send_member=\"UplinksChanged\"' '$p' &&
    grep -q '<deny send_type=\"signal\"' '$p'"

echo "== dpkg -r: flushes, removes the files, keeps the configuration"
mkdir -p /etc/nm-multiwan
cp /usr/share/doc/nm-multiwan/config.example.toml /etc/nm-multiwan/config.toml
dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./prerm >"$tmp/prerm"
check "prerm runs nm-multiwan flush on remove" grep -q 'nm-multiwan --quiet flush' "$tmp/prerm"
check "dpkg -r nm-multiwan (a failing flush never blocks it)" dpkg -r nm-multiwan
while read -r path _; do
    if grep -qx -- "$path" <<<"$conffiles"; then
        check "conffile kept until purge: $path" [ -e "$path" ]
    else
        check "removed: $path" [ ! -e "$path" ]
    fi
done <<<"$expected"
check "no policy rule left at our priorities" bash -c '! ip rule show | grep -qE "^3010[0-2]:"'
check "no firewall chain left" bash -c '! { iptables-save; ip6tables-save; } 2>/dev/null | grep -q nm-multiwan'
check "configuration kept until purge" [ -e /etc/nm-multiwan/config.toml ]

echo "== dpkg -P: purges the state"
mkdir -p /run/nm-multiwan
echo '{}' >/run/nm-multiwan/state.json
check "dpkg -P nm-multiwan" dpkg -P nm-multiwan
check "dpkg forgot the package" bash -c '! dpkg-query -W nm-multiwan 2>/dev/null | grep -q .'
check "/run/nm-multiwan is gone" [ ! -e /run/nm-multiwan ]
check "/etc/nm-multiwan is gone" [ ! -e /etc/nm-multiwan ]
check "/usr/share/doc/nm-multiwan is gone" [ ! -e /usr/share/doc/nm-multiwan ]
while read -r path _; do
    [ -e "$path" ] && bad "left behind after purge: $path"
done <<<"$expected"

echo "== Arch package"
listing "$pkg" >"$tmp/arch.list"
# Distribution conventions: zsh's vendor directory, and where the licence goes.
sed -e 's,^/usr/share/zsh/vendor-completions/,/usr/share/zsh/site-functions/,' \
    -e 's,^/usr/share/doc/nm-multiwan/copyright ,/usr/share/licenses/nm-multiwan/LICENSE ,' \
    "$tmp/deb.list" | sort >"$tmp/deb-as-arch.list"
if diff -u "$tmp/deb-as-arch.list" "$tmp/arch.list"; then
    ok "Arch package has the same files, modes and root:root owners as the .deb"
else
    bad "Arch package differs from the .deb (diff above: - .deb, + Arch)"
fi
bsdtar -xOf "$pkg" .PKGINFO >"$tmp/PKGINFO"
check "PKGINFO: pkgname, version, x86_64" bash -c "
    grep -qx 'pkgname = nm-multiwan' '$tmp/PKGINFO' && grep -qx 'pkgver = $version-1' '$tmp/PKGINFO' &&
    grep -qx 'arch = x86_64' '$tmp/PKGINFO'"
check "PKGINFO: depends on networkmanager and iptables" bash -c "
    grep -qx 'depend = networkmanager' '$tmp/PKGINFO' && grep -qx 'depend = iptables' '$tmp/PKGINFO'"
check "install scriptlet flushes in pre_remove" bash -c "
    bsdtar -xOf '$pkg' .INSTALL | sed -n '/^pre_remove()/,/^}/p' | grep -q 'nm-multiwan --quiet flush'"
bsdtar -xOf "$pkg" usr/lib/NetworkManager/dispatcher.d/90-nm-multiwan >"$tmp/arch-dispatcher"
check "Arch dispatcher script is the repo's" cmp -s "$tmp/arch-dispatcher" dispatcher.d/90-nm-multiwan
bsdtar -xOf "$pkg" usr/bin/nm-multiwan >"$tmp/arch-bin" && chmod +x "$tmp/arch-bin"
check "Arch binary runs: --version" bash -c "[ \"\$('$tmp/arch-bin' --version)\" = 'nm-multiwan $version' ]"
check "Arch man page is gzipped" bash -c "bsdtar -xOf '$pkg' usr/share/man/man1/nm-multiwan.1.gz | gzip -t"

finish
