#!/bin/sh
# Sets nm-multiwan up on this machine straight from the checkout, in one command:
#   sudo packaging/install.sh              build, install, and balance right away
#   sudo packaging/install.sh --uninstall  flush the kernel state and remove the files
# Prefer the distribution packages where you can (packaging/build.sh); this is for a
# machine with a Rust toolchain and a checkout.
set -eu
cd "$(dirname "$0")/.."

BIN=/usr/bin/nm-multiwan
HOOK=/usr/lib/NetworkManager/dispatcher.d/90-nm-multiwan
NMCONF=/usr/lib/NetworkManager/conf.d/90-nm-multiwan.conf
DOC=/usr/share/doc/nm-multiwan
FILES="$BIN $HOOK $NMCONF $DOC/config.example.toml"

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root: sudo packaging/install.sh" >&2
    exit 1
fi

if [ "${1:-}" = "--uninstall" ]; then
    if [ -x "$BIN" ]; then
        "$BIN" flush || echo "install.sh: flush failed; removing the files anyway" >&2
    fi
    rm -f $FILES
    rmdir "$DOC" 2>/dev/null || true
    rm -rf /run/nm-multiwan
    echo "nm-multiwan removed"
    exit 0
elif [ $# -gt 0 ]; then
    echo "usage: sudo packaging/install.sh [--uninstall]" >&2
    exit 2
fi

for tool in iptables-restore NetworkManager; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "install.sh: $tool is missing (Debian/Ubuntu: apt-get install iptables network-manager)" >&2
        exit 1
    fi
done

# Build as the user who called sudo, with their toolchain, so target/ stays theirs.
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    # A login shell, so that the user's ~/.cargo/env puts cargo on PATH.
    su -l "$SUDO_USER" -c 'cd "$1" && cargo build --release --locked' sh "$(pwd)"
else
    cargo build --release --locked
fi

install -D -m 0755 -o root -g root target/release/nm-multiwan "$BIN"
# nm-dispatcher runs only root-owned scripts that nobody else may write.
install -D -m 0755 -o root -g root dispatcher.d/90-nm-multiwan "$HOOK"
# NetworkManager leaves our keeper interface alone (read at its next start or reload).
install -D -m 0644 packaging/NetworkManager/90-nm-multiwan.conf "$NMCONF"
if [ -f packaging/config.example.toml ]; then
    install -D -m 0644 packaging/config.example.toml "$DOC/config.example.toml"
fi

if "$BIN" apply; then
    "$BIN" status
else
    echo "install.sh: installed, but the first apply failed (is NetworkManager running?);" >&2
    echo "            it runs again on the next connection change, or run: sudo nm-multiwan apply" >&2
fi
