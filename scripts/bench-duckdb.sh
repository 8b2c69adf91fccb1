#!/usr/bin/env bash
# The hop count of `skystream bench --query hashtags` beside DuckDB's batch query over the same
# Jetstream JSONL file, in one run: hop(1 min, 5 min) count(*) and count(DISTINCT did) per
# hashtag. Prints both times (medians of --runs), checks that both computed the same totals,
# and prints the ratio. DuckDB (PyPI `duckdb`) is installed into a venv when missing.
#
#   scripts/bench-duckdb.sh [--posts N] [--runs N] [--file PATH] [--threads N]
set -euo pipefail
cd "$(dirname "$0")/.."
posts=1000000 runs=3 file=${TMPDIR:-/tmp}/skystream-bench-posts.jsonl threads=1
while [ $# -gt 0 ]; do
    case "$1" in
        --posts) posts=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --file) file=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/skystream
[ -x "$bin" ] || cargo build --release --locked --bin skystream
venv=${SKYSTREAM_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/skystream/duckdb-venv}
if ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'duckdb>=1.1'
fi
# The file is written once (1M posts: ~600 MB) and reused by later runs.
out=$("$bin" bench --query hashtags --posts "$posts" --jsonl "$file" --runs "$runs" --threads "$threads")
echo "$out"
sky_s=$(echo "$out" | sed -n 's/^median time: *\([0-9.]*\) s.*/\1/p')
sky_rows=$(echo "$out" | sed -n 's/^result checksum: *//p')
"$venv/bin/python" - "$file" "$runs" "$sky_s" "$sky_rows" <<'PY'
import statistics, sys, time
import duckdb
path, runs, sky_s, sky_sum = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
con = duckdb.connect()
con.execute("SET threads = 1")
# The rows skystream reads: post creates; event time from time_us; hashtags from facet tags
# and record tags, trimmed, without a leading '#', lowercase, not only digits, once per post
# (skystream_model::normalize_hashtag). Watermark: no row of the synthetic file is late (its times only grow).
q = f"""
WITH ev AS (
  SELECT did, time_us, commit.record AS r
  FROM read_json('{path}', format = 'newline_delimited', maximum_object_size = 16777216,
                 columns = {{did: 'VARCHAR', time_us: 'BIGINT', kind: 'VARCHAR',
                            commit: 'STRUCT(operation VARCHAR, collection VARCHAR,
                                     record STRUCT(tags VARCHAR[],
                                       facets STRUCT(features STRUCT("$type" VARCHAR, tag VARCHAR)[])[]))'}})
  WHERE kind = 'commit' AND commit.operation = 'create' AND commit.collection = 'app.bsky.feed.post'),
tagged AS (
  SELECT did, time_us // 60000000 AS minute,
         list_distinct(list_transform(
           list_concat(coalesce(flatten(list_transform(coalesce(r.facets, []), lambda f: list_transform(
             list_filter(coalesce(f.features, []), lambda x: x."$type" = 'app.bsky.richtext.facet#tag'), lambda x: x.tag))), []),
             coalesce(r.tags, [])),
           lambda t: lower(trim(ltrim(trim(t), '#＃'))))) AS tags
  FROM ev),
rows AS (SELECT did, minute, unnest(tags) AS tag FROM tagged),
win AS (SELECT did, tag, minute + k AS w_end FROM rows, range(1, 6) AS ks(k))
SELECT count(*) AS rows, sum(n) AS n, sum(a) AS a FROM (
  SELECT w_end, tag, count(*) AS n, count(DISTINCT did) AS a FROM win
  WHERE tag <> '' AND NOT regexp_full_match(tag, '[0-9]+') GROUP BY w_end, tag)
"""
times, res = [], None
for _ in range(runs):
    t = time.perf_counter()
    res = con.execute(q).fetchone()
    times.append(time.perf_counter() - t)
duck = statistics.median(times)
print(f"duckdb {duckdb.__version__}, 1 thread: median {duck:.3f} s of {runs} ({', '.join(f'{x:.3f}' for x in times)})")
print(f"duckdb checksum:    windows x tags {res[0]}, sum(count) {res[1]}, sum(distinct) {res[2]}")
print(f"skystream checksum: {sky_sum}")
same = sky_sum == f"windows x tags {res[0]}, sum(count) {res[1]}, sum(distinct) {res[2]}"
print("results:            " + ("the same" if same else "DIFFER"))
print(f"skystream / duckdb: {duck / sky_s:.2f}x duckdb's speed (skystream {sky_s:.3f} s, whole process)")
sys.exit(0 if same else 1)
PY
