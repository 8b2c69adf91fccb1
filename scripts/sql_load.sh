#!/usr/bin/env bash
# Load on the SQL endpoint: a lake of 6 synthetic hours (30 posts/s) of keyword counts, served
# by `skystream serve`, queried by pgbench (a separate process, simple protocol, as psycopg2
# and so Superset speak it) with the dashboard's kinds of queries. Prints pgbench's reports.
#   scripts/sql_load.sh            (after cargo build --release; SKYSTREAM_BIN to override)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="${SKYSTREAM_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/skystream}"
work="$(mktemp -d /tmp/skystream-sql-load.XXXXXX)"
trap 'kill $serve 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" run keyword_counts --set "lake=$work/lake" --with posts.connector=synthetic \
    --with posts.seed=3 --with posts.rate=30 --with posts.duration=6h \
    --with posts.start=2026-07-04T00:00:00Z --with posts.speed=max >/dev/null 2>&1
files=$(find "$work/lake" -name '*.parquet' | wc -l)
"$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" --sql-listen 127.0.0.1:25433 \
    --sql-lake "$work/lake" >"$work/serve.log" 2>&1 &
serve=$!
for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/25433) 2>/dev/null && break; sleep 0.2; done
export PGHOST=127.0.0.1 PGPORT=25433 PGUSER=skystream PGDATABASE=skystream
rows=$(psql -XAtc "SELECT count(*) FROM keyword_counts")
echo "lake: $rows keyword_counts rows in $files Parquet files"
cat >"$work/top.sql" <<'SQL'
SELECT keyword, sum(count) AS n FROM keyword_counts GROUP BY keyword ORDER BY n DESC LIMIT 10;
SQL
cat >"$work/grain.sql" <<'SQL'
SELECT date_trunc('hour', window_end) AS t, sum(count) FROM keyword_counts WHERE keyword = 'today' GROUP BY 1 ORDER BY 1;
SQL
cat >"$work/point.sql" <<'SQL'
SELECT count(*) FROM keyword_counts WHERE dt = '2026-07-04' AND hour = '03';
SQL
for q in top grain point; do
    echo "== $q: $(head -c 110 "$work/$q.sql")"
    pgbench -n -M simple -c 4 -j 2 -T 10 -f "$work/$q.sql" 2>&1 \
        | grep -E "latency average|latency stddev|tps =|number of failed"
done
