#!/usr/bin/env bash
# Builds the distribution packages from the working checkout into target/packages/:
#   nm-multiwan_<version>-1_amd64.deb        (cargo-deb, metadata in Cargo.toml)
#   nm-multiwan-<version>-1-x86_64.pkg.tar.zst (makepkg, packaging/arch/PKGBUILD)
#
# Run as root on Debian/Ubuntu: installs what it needs (makepkg, fakeroot, bsdtar,
# zstd, cargo-deb), and runs makepkg, which refuses root, as the unprivileged user
# $NMMW_BUILD_USER (default nmmw-build, created if missing) with the toolchain that
# builds the .deb. Needs a Rust toolchain on PATH (edition 2024: Rust >= 1.85).
# Set NMMW_KEEP_BUILD=1 to keep the makepkg build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export CARGO_TARGET_DIR="$repo/target"
export DEBIAN_FRONTEND=noninteractive
build_user=${NMMW_BUILD_USER:-nmmw-build}
build_home=/var/cache/$build_user
out="$repo/target/packages"

say() { printf '== %s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: it installs build tools and creates the makepkg user"

# --- tools -------------------------------------------------------------------------
need=(makepkg pacman-package-manager fakeroot libarchive-tools zstd dpkg-dev gzip binutils gcc libc6-dev git)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || die "no cargo on PATH (install Rust with rustup)"
if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb"
    cargo install cargo-deb --locked
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
pkgver=$(sed -n 's/^pkgver=//p' packaging/arch/PKGBUILD)
[ "$version" = "$pkgver" ] ||
    die "Cargo.toml version $version != PKGBUILD pkgver $pkgver: update packaging/arch/PKGBUILD"
mkdir -p "$out"
rm -f "$out"/nm-multiwan_*.deb "$out"/nm-multiwan-*.pkg.tar.zst

# --- .deb --------------------------------------------------------------------------
say "release build"
cargo build --release --locked
say "man page and completions from the binary"
rm -rf target/assets
target/release/nm-multiwan generate-assets target/assets
gzip -9n <target/assets/nm-multiwan.1 >target/assets/nm-multiwan.1.gz
say ".deb"
cargo deb --no-build --locked --output "$out/"

# --- Arch package ------------------------------------------------------------------
# The unprivileged user needs the toolchain: use its real directory (the rustc sysroot,
# which holds cargo too; no rustup proxy), or, when the user cannot read it (rustup
# under /root), a hard-linked copy of it in the build user's cache.
if ! id "$build_user" >/dev/null 2>&1; then
    say "creating build user $build_user"
    useradd --system --home-dir "$build_home" --shell /usr/sbin/nologin "$build_user"
fi
install -d -o "$build_user" -g "$build_user" -m 0755 "$build_home" "$build_home/cargo"
as_user() { runuser -u "$build_user" -- "$@"; }

sysroot=$(rustc --print sysroot)
if [ ! -x "$sysroot/bin/cargo" ] || [ ! -x "$sysroot/bin/rustc" ]; then
    die "$sysroot/bin has no cargo and rustc; cannot hand the toolchain to $build_user"
fi
toolbin="$sysroot/bin"
if ! as_user "$toolbin/rustc" -vV >/dev/null 2>&1; then
    commit=$(rustc -vV | sed -n 's/^commit-hash: //p' | cut -c1-12)
    shared="$build_home/toolchain-$(basename "$sysroot")-$commit"
    if [ ! -x "$shared/bin/cargo" ]; then
        say "sharing the toolchain with $build_user: $shared"
        rm -rf "$build_home"/toolchain-*
        cp -al "$sysroot" "$shared.tmp" 2>/dev/null || { rm -rf "$shared.tmp"; cp -a "$sysroot" "$shared.tmp"; }
        mv "$shared.tmp" "$shared"
    fi
    toolbin="$shared/bin"
    as_user "$toolbin/rustc" -vV >/dev/null || die "$build_user cannot run $toolbin/rustc"
fi

# Seed the build user's cargo cache with the crates root has already downloaded.
root_cargo_home=${CARGO_HOME:-$HOME/.cargo}
for cache in "$root_cargo_home"/registry/cache/*/; do
    [ -d "$cache" ] || continue
    dest="$build_home/cargo/registry/cache/$(basename "$cache")"
    install -d -o "$build_user" -g "$build_user" "$build_home/cargo/registry" \
        "$build_home/cargo/registry/cache" "$dest"
    sed -n '/^\[\[package\]\]/,/^$/{s/^name = "\(.*\)"$/\1/p;s/^version = "\(.*\)"$/\1/p}' Cargo.lock |
        paste - - | while read -r name ver; do
            f="$cache$name-$ver.crate"
            if [ -f "$f" ] && [ ! -f "$dest/$name-$ver.crate" ]; then
                install -m 0644 -o "$build_user" -g "$build_user" "$f" "$dest/"
            fi
        done
done

build=$(mktemp -d /tmp/nm-multiwan-makepkg.XXXXXX)
cleanup() { [ -n "${NMMW_KEEP_BUILD:-}" ] || rm -rf "$build"; }
trap cleanup EXIT

say "source tarball of the working tree"
tarball="$build/nm-multiwan-$version.tar.gz"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files, as they are in the working tree.
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - --transform "s,^,nm-multiwan-$version/," \
            --owner=0 --group=0 --numeric-owner -czf "$tarball"
else
    tar --exclude=./target --exclude=./.git --transform "s,^\.,nm-multiwan-$version," \
        --owner=0 --group=0 --numeric-owner -czf "$tarball" .
fi
cp packaging/arch/PKGBUILD packaging/arch/nm-multiwan.install "$build/"
sum=$(sha256sum "$tarball" | cut -d' ' -f1)
sed -i "s/^sha256sums=.*/sha256sums=('$sum')/" "$build/PKGBUILD"
cat >"$build/makepkg.conf" <<'EOF'
source /etc/makepkg.conf
# Arch's defaults where Debian's makepkg.conf differs.
PKGEXT='.pkg.tar.zst'
SRCEXT='.src.tar.zst'
INTEGRITY_CHECK=(sha256)
BUILDENV=(!distcc color !ccache check !sign)
OPTIONS=(strip docs !libtool !staticlibs emptydirs zipman purge !debug !lto)
PACKAGER='nm-multiwan packaging/build.sh <nm-multiwan@users.noreply.invalid>'
EOF
mkdir "$build/pkgdest"
# makepkg lists the machine's pacman packages (none) in .BUILDINFO: give pacman an
# empty local database to read.
if [ ! -e /var/lib/pacman/local/ALPM_DB_VERSION ]; then
    install -d /var/lib/pacman/local
    pacman-db-upgrade >/dev/null 2>&1 || true
fi
chown -R "$build_user:$build_user" "$build"

say "Arch package (makepkg as $build_user, dependency check skipped for this build)"
(cd "$build" && runuser -u "$build_user" -- env -i \
    PATH="$toolbin:/usr/local/bin:/usr/bin:/bin" \
    HOME="$build_home" CARGO_HOME="$build_home/cargo" \
    CARGO_BUILD_JOBS="$CARGO_BUILD_JOBS" CARGO_TERM_COLOR="$CARGO_TERM_COLOR" \
    LANG=C.UTF-8 PKGDEST="$build/pkgdest" \
    makepkg --config "$build/makepkg.conf" --nodeps --noconfirm --cleanbuild --force)
cp "$build"/pkgdest/nm-multiwan-*.pkg.tar.zst "$out/"

say "built:"
ls -l "$out"
