#!/usr/bin/env bash
# The whole test suite: unit tests, planner property tests and the end-to-end tests
# against a real NetworkManager in network namespaces (those need root).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: the end-to-end tests need root (network namespaces, a private NetworkManager); run: sudo tests/run.sh" >&2
    exit 1
fi
# Two sandboxes at a time: each runs its own NetworkManager and dbus-daemon.
cargo test --locked -- --test-threads=2 "$@"
