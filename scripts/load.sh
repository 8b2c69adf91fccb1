#!/usr/bin/env bash
# Load numbers for the HTTP API: `skystream serve` on loopback, running the trend query of
# sql/demo.sql-style keyword counts, and wrk (Debian package) in a separate process hammering
#   GET /api/v1/trends      (read from the engine's newest window, and from Redis)
#   GET /api/v1/pipelines   (every pipeline's state and counters)
# Prints requests/s and latency percentiles (p50, p90, p99) for each.
#
#   scripts/load.sh [--duration SECS] [--connections N] [--threads N] [--pipelines N]
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10
connections=64
threads=2
pipelines=4
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration="$2"; shift 2 ;;
        --connections) connections="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --pipelines) pipelines="$2"; shift 2 ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
done

if ! command -v wrk >/dev/null 2>&1; then
    echo "load: installing wrk (Debian)" >&2
    "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" wrk
fi
SKYSTREAM_SERVICES=redis . scripts/services.sh

# The same build as scripts/test.sh (workspace features, so DataFusion is not built twice).
cargo build --release --workspace --bins --locked >&2
bin="${CARGO_TARGET_DIR:-target}/release/skystream"

port=$((20000 + RANDOM % 20000))
base="http://127.0.0.1:$port"
dir="$(mktemp -d)"
key="skystream-load-$$"
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir" >"$dir/serve.log" 2>&1 &
serve_pid=$!
"$bin" serve --listen "127.0.0.1:$((port + 1))" --data-dir "$dir/redis" \
    --trends-redis "$SKYSTREAM_REDIS" --trends-key "$key" >"$dir/serve-redis.log" 2>&1 &
redis_pid=$!
trap 'kill $serve_pid $redis_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

for _ in $(seq 1 100); do
    curl -sf "$base/readyz" >/dev/null && curl -sf "http://127.0.0.1:$((port + 1))/readyz" >/dev/null && break
    sleep 0.1
done

# Keyword counts per 1-minute window of a synthetic firehose (a window every 0.2 s), top 20
# per window; one pipeline also writes the ranking to Redis for the second server to read.
query() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
sink, seed = sys.argv[1], sys.argv[2]
q = f"""CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
  WITH (connector = 'synthetic', rate = '40', speed = '300', duration = '24h', seed = '{seed}');
CREATE TABLE out WITH ({sink});
INSERT INTO out SELECT window_end, keyword, n FROM (
  SELECT win['end'] AS window_end, keyword, n,
         ROW_NUMBER() OVER (PARTITION BY win ORDER BY n DESC, keyword) AS rank
  FROM (SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
        FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
        GROUP BY keyword, win))
WHERE rank <= 20"""
print(json.dumps({"name": f"load{seed}", "query": q}))
EOF
}
for i in $(seq 1 "$pipelines"); do
    query "connector = 'stdout', format = 'json'" "$i" |
        curl -sf -XPOST "$base/api/v1/pipelines" -H 'content-type: application/json' -d @- >/dev/null
done
query "connector = 'redis', url = '$SKYSTREAM_REDIS', layout = 'ranking', key = '$key', window = 'window_end', member = 'keyword', score = 'n', ttl = '600'" 0 |
    curl -sf -XPOST "http://127.0.0.1:$((port + 1))/api/v1/pipelines" -H 'content-type: application/json' -d @- >/dev/null

# Wait until both servers rank a window.
for _ in $(seq 1 200); do
    a="$(curl -sf "$base/api/v1/trends?limit=10" || true)"
    b="$(curl -sf "http://127.0.0.1:$((port + 1))/api/v1/trends?limit=10" || true)"
    if [[ "$a" == *'"rank":10'* && "$b" == *'"rank":10'* ]]; then break; fi
    sleep 0.1
done
[[ "$a" == *'"rank":10'* ]] || { echo "load: no trends from the engine: $a" >&2; exit 1; }
[[ "$b" == *'"rank":10'* ]] || { echo "load: no trends from Redis: $b" >&2; exit 1; }

echo "skystream serve on loopback: $pipelines pipelines running (+1 writing Redis); wrk -t$threads -c$connections -d${duration}s"
run() {
    local label="$1" url="$2"
    local out
    out="$(wrk -t"$threads" -c"$connections" -d"${duration}s" --latency "$url")"
    if grep -q "Non-2xx" <<<"$out"; then
        echo "load: $label answered errors:" >&2
        echo "$out" >&2
        exit 1
    fi
    local rps p50 p90 p99
    rps="$(awk '/^Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p90="$(awk '$1 == "90%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    printf '%-42s %10s req/s   p50 %-8s p90 %-8s p99 %s\n' "$label" "$rps" "$p50" "$p90" "$p99"
}
run "GET /api/v1/trends?limit=10 (engine)" "$base/api/v1/trends?limit=10"
run "GET /api/v1/trends?limit=10 (Redis)" "http://127.0.0.1:$((port + 1))/api/v1/trends?limit=10"
run "GET /api/v1/pipelines ($pipelines pipelines)" "$base/api/v1/pipelines"
