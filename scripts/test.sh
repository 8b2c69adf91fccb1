#!/usr/bin/env bash
# The full test suite: unit tests of every crate and the streaming-vs-batch oracle.
# Starts the local services the tests need (none yet for the embedded engine tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/skystream/target}"
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --release --workspace --locked --no-fail-fast "$@"
else
    cargo test --release --workspace --locked --no-fail-fast "$@"
fi
