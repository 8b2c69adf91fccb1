#!/usr/bin/env bash
# Fuzzes the SQL front end, the Jetstream decoder and the SQL endpoint's connection start
# (fuzz/, cargo fuzz) for a bounded time each, from the corpus checked in under fuzz/corpus/.
#   scripts/fuzz.sh [SECONDS]     (default 60 per target)
# A crash (panic, stack overflow, hang) fails the run; its input is kept in fuzz/artifacts/.
# Coverage instrumentation only (no sanitizer: the code is safe Rust). The build has its own
# target directory ($SKYSTREAM_FUZZ_TARGET, default next to $CARGO_TARGET_DIR): instrumented
# code cannot share the main build's.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (crates.io)" >&2
    cargo install cargo-fuzz --locked --version 0.13.2
fi
target="${SKYSTREAM_FUZZ_TARGET:-${CARGO_TARGET_DIR:-$PWD/target}-fuzz}"
# cargo fuzz passes flags that are unstable in name only (-Zsanitizer is not used: -s none).
export RUSTC_BOOTSTRAP=1
cd fuzz
targets=(sql_script jetstream_decoder pgwire_startup)
cargo fuzz build -s none --dev --target-dir "$target"
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    # New inputs the run finds go to a scratch corpus: the checked-in one stays as it is.
    scratch="$(mktemp -d)"
    log="$scratch.log"
    echo "== fuzz $t (${secs}s)"
    status=0
    cargo fuzz run -s none --dev --target-dir "$target" "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -max_len=8192 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ +DONE|ERROR|panic" "$log" || true
    rm -rf "$scratch"
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz: $t found a crash (exit $status); its input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    rm -f "$log"
done
echo "fuzz: no crash"
