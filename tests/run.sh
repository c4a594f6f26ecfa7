#!/usr/bin/env bash
# The whole test suite: unit and property tests, then the end-to-end tests against a real
# NetworkManager in network namespaces (those need root). On Debian/Ubuntu the tools the
# sandbox needs are installed first if any is missing (tests/sandbox/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: the end-to-end tests need root (network namespaces, a private NetworkManager); run: sudo tests/run.sh" >&2
    exit 1
fi

tests/sandbox/install-deps.sh
# Sandboxes left by a killed run (their owner process is gone) would be in the way.
tests/sandbox/sandbox.sh reap

# Two sandboxes at a time: each runs its own NetworkManager and dbus-daemon.
cargo test --locked --no-fail-fast -- --test-threads=2 "$@"
