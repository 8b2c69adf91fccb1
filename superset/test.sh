#!/usr/bin/env bash
# The Superset test, as a person would do it: fill a lake from a synthetic run of the shipped
# queries, start `skystream serve` with its SQL endpoint over that lake, install and provision
# Superset (superset/setup.sh), check what /api/v1/chart/data answers for every chart against
# the Parquet files, and screenshot the dashboard in headless Chromium.
#
#   superset/test.sh            (after `cargo build --release`; .ci/run runs it)
#   SKYSTREAM_BIN               the skystream binary (default: $CARGO_TARGET_DIR or target/release)
#   SKYSTREAM_ARTIFACTS         where the screenshot and logs go (default /tmp/skystream-artifacts)
# Needs PostgreSQL on 127.0.0.1:5432 for Superset's metadata (the machine's), Debian chromium
# and chromium-driver (installed when missing), and network access to PyPI the first time.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="${SKYSTREAM_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/skystream}"
art="${SKYSTREAM_ARTIFACTS:-/tmp/skystream-artifacts}"
mkdir -p "$art"
work="$(mktemp -d /tmp/skystream-superset.XXXXXX)"
lake="$work/lake"
sql_port="${SUPERSET_TEST_SQL_PORT:-15433}"
api_port="${SUPERSET_TEST_API_PORT:-18080}"
superset_port="${SUPERSET_PORT:-18088}"
export SKYSTREAM_SQL_PASSWORD="superset-test-$$"
if [ -z "${SUPERSET_METADATA_URI:-}" ]; then
    # The test's own metadata database, new each run: Superset's dashboard import does not
    # overwrite charts and datasets that exist, so a database left by an earlier run would keep
    # their old definitions.
    export SUPERSET_METADATA_URI="postgresql://postgres@127.0.0.1:5432/skystream_superset_test"
    psql "postgresql://postgres@127.0.0.1:5432/postgres" -qc \
        'DROP DATABASE IF EXISTS skystream_superset_test WITH (FORCE)' >/dev/null
fi
export SUPERSET_ADMIN_PASSWORD=admin
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
log() { echo "superset/test.sh: $*" >&2; }
wait_http() {
    for _ in $(seq 1 "${3:-120}"); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 1
    done
    log "$2 did not answer at $1"
    return 1
}

[ -x "$bin" ] || { log "no skystream binary at $bin: cargo build --release first"; exit 1; }
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    log "installing chromium and chromium-driver (Debian)"
    "$repo/scripts/apt-install.sh" chromium chromium-driver
fi

# 1. The lake: 90 minutes of synthetic posts (one planted burst) through the shipped queries.
posts=(--with posts.connector=synthetic --with posts.seed=21 --with posts.rate=20
       --with posts.duration=90m --with posts.start=2026-07-04T12:00:00Z --with posts.speed=max
       --with "posts.bursts=eclipse:70m:10m:8:en")
for q in keyword_counts hashtag_counts post_volume; do
    log "filling the lake: $q"
    "$bin" run "$q" --set "lake=$lake" "${posts[@]}" >"$art/run-$q.log" 2>&1
done
log "filling the lake: trends"
"$bin" run trends --set "lake=$lake" "${posts[@]}" \
    --with trend_alerts_redis.connector=memory --with trend_alerts_kafka.connector=memory \
    >"$art/run-trends.log" 2>&1
ls "$lake" >&2

# 2. skystream serve with its SQL endpoint over the lake.
"$bin" serve --listen "127.0.0.1:$api_port" --data-dir "$work/data" \
    --sql-listen "127.0.0.1:$sql_port" --sql-lake "$lake" >"$art/serve.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$api_port/readyz" "skystream serve" 60

# 3. Superset: install (cached), initialise, import the bundle, start.
"$repo/superset/setup.sh" "postgresql://skystream:$SKYSTREAM_SQL_PASSWORD@127.0.0.1:$sql_port/skystream" \
    2>&1 | tee "$art/superset-setup.log" >&2
SUPERSET_PORT="$superset_port" "$repo/superset/run.sh" >"$art/superset.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$superset_port/health" "Superset" 180

# 4. Its numbers against the lake, and a look at the dashboard.
venv="${SUPERSET_VENV:-/var/cache/skystream/superset-venv}"
"$venv/bin/python" "$repo/superset/check_dashboard.py" --url "http://127.0.0.1:$superset_port" \
    --lake "$lake" --screenshot "$art/superset-dashboard.png"
log "screenshot (CI artifact): $art/superset-dashboard.png"
