//! Streaming results equal batch results (see the crate docs). Each case writes the streaming
//! query in skystream's dialect and the batch query in plain DataFusion SQL, computing window
//! bounds arithmetically (`date_bin`, a cross join over the panes of a hop).

use skystream_synthetic::{Burst, GeneratorConfig};
use skystream_tests::*;

const DELAY_NS: i64 = 5_000_000_000;

fn script(path: &std::path::Path, body: &str) -> String {
    format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'replay', path = '{}', batch_size = '257');
         CREATE TABLE out WITH (connector = 'memory');
         {body}",
        path.display()
    )
}

/// How many posts of `load_posts` are late (its independent `late` column).
fn late_rows(posts: &arrow::array::RecordBatch) -> usize {
    posts
        .column_by_name("late")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::BooleanArray>()
        .unwrap()
        .true_count()
}

/// Batch CTE `p`: on-time posts with `ws`/`we` of their tumbling 1-minute window.
const TUMBLE_1M: &str = "WITH p AS (
    SELECT *, date_bin(INTERVAL '1 minute', event_time, TIMESTAMP '1970-01-01T00:00:00') AS ws,
              date_bin(INTERVAL '1 minute', event_time, TIMESTAMP '1970-01-01T00:00:00') + INTERVAL '1 minute' AS we
    FROM posts WHERE NOT late)";

/// Batch CTE `p`: each on-time post once per 5-minute window sliding by 1 minute it falls in.
const HOP_1M_5M: &str = "WITH p AS (
    SELECT posts.*, to_timestamp_nanos((CAST(event_time AS BIGINT) / 60000000000 - k) * 60000000000) AS ws,
                    to_timestamp_nanos((CAST(event_time AS BIGINT) / 60000000000 - k) * 60000000000 + 300000000000) AS we
    FROM posts CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS ks(k)
    WHERE NOT late)";

async fn check(
    name: &str,
    cfg: GeneratorConfig,
    stream_body: &str,
    batch_sql: &str,
) -> skystream_engine::metrics::MetricsSnapshot {
    let path = synthetic_file(name, cfg);
    let posts = load_posts(&path, DELAY_NS);
    let (s, m) = run_stream(&script(&path, stream_body), "out").await;
    let b = run_batch(&posts, batch_sql).await;
    assert_same(&s, &b);
    // The same on three threads (stage 0 on several batches at once).
    let (s3, m3) = run_stream_with(&script(&path, stream_body), "out", 3).await;
    assert_same(&s3, &b);
    assert_eq!(
        m3.late_rows, m.late_rows,
        "late rows differ on three threads"
    );
    m
}

#[tokio::test]
async fn tumble_count_per_keyword() {
    check(
        "tumble_kw",
        standard_config(),
        "INSERT INTO out SELECT win['start'] AS ws, win['end'] AS we, keyword, n FROM (
           SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
           FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
           GROUP BY keyword, win)",
        &format!("{TUMBLE_1M} SELECT ws, we, keyword, count(*) FROM (SELECT ws, we, unnest(keywords(text)) AS keyword FROM p) GROUP BY ws, we, keyword"),
    )
    .await;
}

#[tokio::test]
async fn hop_count_per_keyword_from_panes() {
    check(
        "hop_kw",
        standard_config(),
        "INSERT INTO out SELECT win['start'], win['end'], keyword, n FROM (
           SELECT keyword, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
           FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
           GROUP BY keyword, win)",
        &format!("{HOP_1M_5M} SELECT ws, we, keyword, count(*) FROM (SELECT ws, we, unnest(keywords(text)) AS keyword FROM p) GROUP BY ws, we, keyword"),
    )
    .await;
}

#[tokio::test]
async fn hop_count_distinct_authors() {
    check(
        "hop_distinct",
        standard_config(),
        "INSERT INTO out SELECT win['end'], keyword, n, authors FROM (
           SELECT keyword, count(*) AS n, count(DISTINCT did) AS authors, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
           FROM (SELECT did, unnest(keywords(text)) AS keyword, event_time FROM posts)
           GROUP BY keyword, win)",
        &format!("{HOP_1M_5M} SELECT we, keyword, count(*), count(DISTINCT did) FROM (SELECT we, did, unnest(keywords(text)) AS keyword FROM p) GROUP BY we, keyword"),
    )
    .await;
}

/// Keys that live for one minute each (keyword + minute + author), many thousands of them:
/// the window operator's key dictionary reclaims dead keys several times during the run, and
/// windows emitted after a compaction must still hold exactly the right keys and counts.
#[tokio::test]
async fn short_lived_keys_are_reclaimed_without_changing_results() {
    let cfg = GeneratorConfig {
        rate: 6.0,
        ..standard_config()
    };
    check(
        "reclaim",
        cfg,
        "INSERT INTO out SELECT win['end'], k, n, authors FROM (
           SELECT k, count(*) AS n, count(DISTINCT did) AS authors, hop(INTERVAL '1' MINUTE, INTERVAL '3' MINUTE) AS win
           FROM (SELECT did, concat(keyword, '/', date_part('minute', event_time), '/', substr(did, 9, 2)) AS k, event_time
                 FROM (SELECT did, unnest(keywords(text)) AS keyword, event_time FROM posts))
           GROUP BY k, win)",
        "WITH p AS (
            SELECT posts.*, to_timestamp_nanos((CAST(event_time AS BIGINT) / 60000000000 - k) * 60000000000 + 180000000000) AS we
            FROM posts CROSS JOIN (VALUES (0), (1), (2)) AS ks(k) WHERE NOT late)
         SELECT we, k, count(*), count(DISTINCT did) FROM (
            SELECT we, did, concat(keyword, '/', date_part('minute', event_time), '/', substr(did, 9, 2)) AS k
            FROM (SELECT we, did, event_time, unnest(keywords(text)) AS keyword FROM p))
         GROUP BY we, k",
    )
    .await;
}

#[tokio::test]
async fn sum_avg_min_max_per_language() {
    check(
        "aggs_lang",
        standard_config(),
        "INSERT INTO out SELECT win['start'], lang, n, total, mean, shortest, longest FROM (
           SELECT coalesce(langs[1], 'none') AS lang, count(*) AS n, sum(character_length(text)) AS total,
                  avg(character_length(text)) AS mean, min(character_length(text)) AS shortest,
                  max(character_length(text)) AS longest, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
           FROM posts GROUP BY lang, win)",
        &format!("{HOP_1M_5M} SELECT ws, coalesce(langs[1], 'none') AS lang, count(*), sum(character_length(text)),
                  avg(character_length(text)), min(character_length(text)), max(character_length(text))
           FROM p GROUP BY ws, lang"),
    )
    .await;
}

#[tokio::test]
async fn approx_distinct_merges_like_one_sketch() {
    check(
        "approx",
        standard_config(),
        "INSERT INTO out SELECT win['end'], n FROM (SELECT approx_distinct(did) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win FROM posts GROUP BY win)",
        &format!("{HOP_1M_5M} SELECT we, approx_distinct(did) FROM p GROUP BY we"),
    )
    .await;
}

#[tokio::test]
async fn filter_and_case_before_the_window() {
    check(
        "case",
        standard_config(),
        "INSERT INTO out SELECT win['start'], kind, n FROM (
           SELECT CASE WHEN reply_parent IS NULL THEN 'post' ELSE 'reply' END AS kind, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
           FROM posts WHERE (embed IS DISTINCT FROM 'images') AND character_length(text) > 10
           GROUP BY kind, win)",
        &format!("{TUMBLE_1M} SELECT ws, CASE WHEN reply_parent IS NULL THEN 'post' ELSE 'reply' END AS kind, count(*)
           FROM p WHERE (embed IS DISTINCT FROM 'images') AND character_length(text) > 10 GROUP BY ws, kind"),
    )
    .await;
}

#[tokio::test]
async fn having_after_the_window() {
    check(
        "having",
        standard_config(),
        "INSERT INTO out SELECT win['end'], keyword, n FROM (
           SELECT keyword, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
           FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
           GROUP BY keyword, win HAVING count(*) >= 4)",
        &format!("{HOP_1M_5M} SELECT we, keyword, count(*) FROM (SELECT we, unnest(keywords(text)) AS keyword FROM p) GROUP BY we, keyword HAVING count(*) >= 4"),
    )
    .await;
}

#[tokio::test]
async fn top_n_per_window_with_row_number() {
    check(
        "topn",
        standard_config(),
        "INSERT INTO out SELECT ws, keyword, n, rn FROM (
           SELECT win['start'] AS ws, keyword, n, ROW_NUMBER() OVER (PARTITION BY win ORDER BY n DESC, keyword) AS rn
           FROM (SELECT keyword, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
                 FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
                 GROUP BY keyword, win))
         WHERE rn <= 5",
        &format!("{HOP_1M_5M} SELECT ws, keyword, n, rn FROM (
           SELECT ws, keyword, n, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY n DESC, keyword) AS rn
           FROM (SELECT ws, keyword, count(*) AS n FROM (SELECT ws, unnest(keywords(text)) AS keyword FROM p) GROUP BY ws, keyword))
         WHERE rn <= 5"),
    )
    .await;
}

/// Top-N whose order key has many ties and NULLs (DESC puts NULLs first): the window emits
/// only the rows that can make the top N, ties at the boundary included, and the result is
/// still exact.
#[tokio::test]
async fn top_n_with_ties_and_nulls() {
    check(
        "topn_nulls",
        standard_config(),
        "INSERT INTO out SELECT ws, keyword, m, rn FROM (
           SELECT win['start'] AS ws, keyword, m, ROW_NUMBER() OVER (PARTITION BY win ORDER BY m DESC, keyword) AS rn
           FROM (SELECT keyword, max(CASE WHEN character_length(keyword) > 7 THEN character_length(keyword) END) AS m,
                        tumble(INTERVAL '1' MINUTE) AS win
                 FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
                 GROUP BY keyword, win))
         WHERE rn <= 3",
        &format!("{TUMBLE_1M} SELECT ws, keyword, m, rn FROM (
           SELECT ws, keyword, m, ROW_NUMBER() OVER (PARTITION BY ws ORDER BY m DESC, keyword) AS rn
           FROM (SELECT ws, keyword, max(CASE WHEN character_length(keyword) > 7 THEN character_length(keyword) END) AS m
                 FROM (SELECT ws, unnest(keywords(text)) AS keyword FROM p) GROUP BY ws, keyword))
         WHERE rn <= 3"),
    )
    .await;
}

/// Bottom-N (ascending) over a hop, where most keywords tie at the lowest count.
#[tokio::test]
async fn bottom_n_ascending_with_ties() {
    check(
        "bottomn",
        standard_config(),
        "INSERT INTO out SELECT we, keyword, n, rn FROM (
           SELECT win['end'] AS we, keyword, n, ROW_NUMBER() OVER (PARTITION BY win ORDER BY n ASC, keyword DESC) AS rn
           FROM (SELECT keyword, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
                 FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
                 GROUP BY keyword, win))
         WHERE rn < 5",
        &format!("{HOP_1M_5M} SELECT we, keyword, n, rn FROM (
           SELECT we, keyword, n, ROW_NUMBER() OVER (PARTITION BY we ORDER BY n ASC, keyword DESC) AS rn
           FROM (SELECT we, keyword, count(*) AS n FROM (SELECT we, unnest(keywords(text)) AS keyword FROM p) GROUP BY we, keyword))
         WHERE rn < 5"),
    )
    .await;
}

#[tokio::test]
async fn cross_join_unnest_of_hashtags() {
    let cfg = GeneratorConfig {
        rate: 6.0,
        ..standard_config()
    };
    check(
        "crossjoin",
        cfg,
        "INSERT INTO out SELECT win['start'], tag, n FROM (
           SELECT tag, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
           FROM posts CROSS JOIN unnest(posts.hashtags) AS t(tag)
           GROUP BY tag, win)",
        &format!("{TUMBLE_1M} SELECT ws, tag, count(*) FROM (SELECT ws, unnest(hashtags) AS tag FROM p) GROUP BY ws, tag"),
    )
    .await;
}

#[tokio::test]
async fn keywords_per_language_group() {
    check(
        "langs",
        standard_config(),
        "INSERT INTO out SELECT win['end'], lang, keyword, n FROM (
           SELECT lang, keyword, count(*) AS n, tumble(INTERVAL '5' MINUTE) AS win
           FROM (SELECT split_part(coalesce(langs[1], 'en'), '-', 1) AS lang, unnest(keywords(text, langs)) AS keyword, event_time FROM posts)
           WHERE lang IN ('ja', 'ko', 'pt')
           GROUP BY lang, keyword, win)",
        "SELECT date_bin(INTERVAL '5 minutes', event_time, TIMESTAMP '1970-01-01T00:00:00') + INTERVAL '5 minutes' AS we, lang, keyword, count(*)
         FROM (SELECT event_time, split_part(coalesce(langs[1], 'en'), '-', 1) AS lang, unnest(keywords(text, langs)) AS keyword FROM posts WHERE NOT late)
         WHERE lang IN ('ja', 'ko', 'pt') GROUP BY we, lang, keyword",
    )
    .await;
}

#[tokio::test]
async fn shuffled_within_the_bound_loses_nothing() {
    let cfg = GeneratorConfig {
        out_of_order_ns: 4_000_000_000,
        ..standard_config()
    };
    let m = check(
        "shuffled",
        cfg,
        "INSERT INTO out SELECT win['start'], n, authors FROM (
           SELECT count(*) AS n, count(DISTINCT did) AS authors, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
           FROM posts GROUP BY win)",
        &format!("{HOP_1M_5M} SELECT ws, count(*), count(DISTINCT did) FROM p GROUP BY ws"),
    )
    .await;
    assert_eq!(
        m.late_rows, 0,
        "disorder within the watermark bound must not drop rows"
    );
}

#[tokio::test]
async fn late_events_beyond_the_bound_are_dropped_and_counted() {
    let cfg = GeneratorConfig {
        out_of_order_ns: 40_000_000_000,
        ..standard_config()
    };
    let path = synthetic_file("late", cfg);
    let posts = load_posts(&path, DELAY_NS);
    let expected_late = late_rows(&posts);
    assert!(
        expected_late > 50,
        "the input must hold late rows ({expected_late})"
    );
    let (s, m) = run_stream(
        &script(&path, "INSERT INTO out SELECT win['start'], keyword, n FROM (
            SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
            FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts) GROUP BY keyword, win)"),
        "out",
    )
    .await;
    let b = run_batch(
        &posts,
        &format!("{TUMBLE_1M} SELECT ws, keyword, count(*) FROM (SELECT ws, unnest(keywords(text)) AS keyword FROM p) GROUP BY ws, keyword"),
    )
    .await;
    assert_same(&s, &b);
    assert_eq!(m.late_rows as usize, expected_late);
}

#[tokio::test]
async fn stateless_projection_and_filter() {
    check(
        "stateless",
        standard_config(),
        "INSERT INTO out SELECT uri, upper(did) AS who, array_length(hashtags) AS tags, regexp_like(text, '[0-9]') AS digits
         FROM posts WHERE cardinality(hashtags) > 0",
        "SELECT uri, upper(did), array_length(hashtags), regexp_like(text, '[0-9]') FROM posts WHERE NOT late AND cardinality(hashtags) > 0",
    )
    .await;
}

#[tokio::test]
async fn window_without_keys() {
    check(
        "global",
        standard_config(),
        "INSERT INTO out SELECT win['start'], n FROM (SELECT count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win FROM posts GROUP BY win)",
        &format!("{TUMBLE_1M} SELECT ws, count(*) FROM p GROUP BY ws"),
    )
    .await;
}

#[tokio::test]
async fn aggregate_filter_clause() {
    check(
        "aggfilter",
        standard_config(),
        "INSERT INTO out SELECT win['end'], images, links, n FROM (
           SELECT count(*) FILTER (WHERE embed = 'images') AS images, count(*) FILTER (WHERE cardinality(links) > 0) AS links,
                  count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
           FROM posts GROUP BY win)",
        &format!("{HOP_1M_5M} SELECT we, count(*) FILTER (WHERE embed = 'images'), count(*) FILTER (WHERE cardinality(links) > 0), count(*) FROM p GROUP BY we"),
    )
    .await;
}

#[tokio::test]
async fn views_and_union_all() {
    check(
        "views",
        standard_config(),
        "CREATE VIEW replies AS SELECT did, event_time, 'reply' AS kind FROM posts WHERE reply_parent IS NOT NULL;
         CREATE VIEW originals AS SELECT did, event_time, 'post' AS kind FROM posts WHERE reply_parent IS NULL;
         INSERT INTO out SELECT win['start'], kind, n FROM (
           SELECT kind, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
           FROM (SELECT * FROM replies UNION ALL SELECT * FROM originals) GROUP BY kind, win)",
        &format!("{TUMBLE_1M} SELECT ws, CASE WHEN reply_parent IS NULL THEN 'post' ELSE 'reply' END AS kind, count(*) FROM p GROUP BY ws, kind"),
    )
    .await;
}

#[tokio::test]
async fn two_inserts_share_one_source() {
    let path = synthetic_file("two", standard_config());
    let posts = load_posts(&path, DELAY_NS);
    let sql = format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND) WITH (connector = 'replay', path = '{}');
         CREATE TABLE a WITH (connector = 'memory');
         CREATE TABLE b (ws TIMESTAMP, n BIGINT) WITH (connector = 'memory');
         INSERT INTO a SELECT win['start'], tag, n FROM (SELECT tag, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win FROM (SELECT unnest(hashtags) AS tag, event_time FROM posts) GROUP BY tag, win);
         INSERT INTO b SELECT win['start'], n FROM (SELECT count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win FROM posts GROUP BY win);",
        path.display()
    );
    let reg = skystream_registry::registry();
    let planned = skystream_sql::plan_script(&sql, &reg)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        planned.pipeline.sources.len(),
        1,
        "one source feeds both flows"
    );
    planned.pipeline.run().await.unwrap();
    let (_, a) = reg.memory().batches("a").unwrap();
    let (schema_b, b) = reg.memory().batches("b").unwrap();
    assert_eq!(
        schema_b.field(0).name(),
        "ws",
        "sink columns take the declared names"
    );
    assert_same(&a, &run_batch(&posts, &format!("{TUMBLE_1M} SELECT ws, tag, count(*) FROM (SELECT ws, unnest(hashtags) AS tag FROM p) GROUP BY ws, tag")).await);
    assert_same(
        &b,
        &run_batch(
            &posts,
            &format!("{TUMBLE_1M} SELECT ws, count(*) FROM p GROUP BY ws"),
        )
        .await,
    );
}

#[tokio::test]
async fn hop_with_wide_width_and_burst_keyword() {
    let cfg = GeneratorConfig {
        bursts: vec![Burst::parse("eclipse:5m:10m:10").unwrap()],
        ..standard_config()
    };
    check(
        "widehop",
        cfg,
        "INSERT INTO out SELECT win['start'], n FROM (
           SELECT count(*) AS n, hop(INTERVAL '2' MINUTE, INTERVAL '10' MINUTE) AS win
           FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts) WHERE keyword = 'eclipse' GROUP BY win)",
        "SELECT to_timestamp_nanos((CAST(event_time AS BIGINT) / 120000000000 - k) * 120000000000) AS ws, count(*)
         FROM (SELECT event_time, unnest(keywords(text)) AS keyword FROM posts WHERE NOT late) CROSS JOIN (VALUES (0),(1),(2),(3),(4)) AS ks(k)
         WHERE keyword = 'eclipse' GROUP BY ws",
    )
    .await;
}

#[tokio::test]
async fn recorded_jetstream_events() {
    let path = repo_root().join("testdata/jetstream/expected_v1.jsonl");
    let posts = load_posts(&path, 1_000_000_000_000);
    assert_eq!(posts.num_rows(), 17, "the recording holds 17 post creates");
    let sql = format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '1000' SECOND) WITH (connector = 'replay', path = '{}');
         CREATE TABLE out WITH (connector = 'memory');
         INSERT INTO out SELECT win['start'], lang, n FROM (
           SELECT coalesce(langs[1], 'none') AS lang, count(*) AS n, tumble(INTERVAL '1' SECOND) AS win FROM posts GROUP BY lang, win)",
        path.display()
    );
    let (s, m) = run_stream(&sql, "out").await;
    assert_eq!(m.rows_in, 17);
    assert_eq!(m.filtered, 135, "152 events, 17 posts");
    assert_eq!(m.malformed, 0);
    let b = run_batch(
        &posts,
        "SELECT date_bin(INTERVAL '1 second', event_time, TIMESTAMP '1970-01-01T00:00:00'), coalesce(langs[1], 'none') AS lang, count(*) FROM posts GROUP BY 1, lang",
    )
    .await;
    assert_same(&s, &b);
}

/// Batch CTEs `r5` (each on-time post once per 5-minute window sliding by 1 minute) and `r15`
/// (the same for 15-minute windows), with the window end `we`.
const HOP_1M_5M_AND_15M: &str = "WITH r5 AS (
    SELECT posts.*, to_timestamp_nanos((CAST(event_time AS BIGINT) / 60000000000 - k) * 60000000000 + 300000000000) AS we
    FROM posts CROSS JOIN (VALUES (0), (1), (2), (3), (4)) AS ks(k) WHERE NOT late),
  r15 AS (
    SELECT posts.*, to_timestamp_nanos((CAST(event_time AS BIGINT) / 60000000000 - k) * 60000000000 + 900000000000) AS we
    FROM posts CROSS JOIN (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9), (10), (11), (12), (13), (14)) AS ks(k)
    WHERE NOT late)";

/// Two windowed aggregates of different widths, sliding alike, joined per window end on their
/// key: a recent count beside the count of a longer window (the shape of a trend baseline).
#[tokio::test]
async fn join_of_two_windows_on_key_and_window_end() {
    check(
        "join_windows",
        standard_config(),
        "CREATE VIEW kw AS SELECT did, unnest(keywords(text)) AS keyword, event_time FROM posts;
         CREATE VIEW r AS SELECT keyword, count(*) AS n, count(DISTINCT did) AS a,
             hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win FROM kw GROUP BY keyword, win;
         CREATE VIEW l AS SELECT keyword, count(*) AS n,
             hop(INTERVAL '1' MINUTE, INTERVAL '15' MINUTE) AS win FROM kw GROUP BY keyword, win;
         INSERT INTO out SELECT r.win['end'] AS we, r.keyword, r.n, r.a, l.n - r.n AS before
         FROM r JOIN l ON r.keyword = l.keyword AND r.win['end'] = l.win['end']",
        &format!(
            "{HOP_1M_5M_AND_15M},
             r AS (SELECT we, keyword, count(*) AS n, count(DISTINCT did) AS a
                   FROM (SELECT we, did, unnest(keywords(text)) AS keyword FROM r5) GROUP BY we, keyword),
             l AS (SELECT we, keyword, count(*) AS n
                   FROM (SELECT we, unnest(keywords(text)) AS keyword FROM r15) GROUP BY we, keyword)
             SELECT r.we, r.keyword, r.n, r.a, l.n - r.n FROM r JOIN l ON r.keyword = l.keyword AND r.we = l.we"
        ),
    )
    .await;
}

/// Four windowed aggregates over two heads (keywords, and posts per language), outer-joined
/// per window end; totals per window with window functions over the joined rows, a score, and
/// the top 5 per window and language: the shape of the shipped trend query.
#[tokio::test]
async fn left_joins_totals_and_top_n_over_four_windows() {
    let cfg = GeneratorConfig {
        bursts: vec![
            Burst::parse("eclipse:10m:10m:8").unwrap(),
            Burst::parse("地震:15m:10m:6:ja").unwrap(),
        ],
        ..standard_config()
    };
    check(
        "join_four",
        cfg,
        "CREATE VIEW p AS SELECT did, coalesce(langs[1], 'und') AS lang, text, event_time FROM posts;
         CREATE VIEW kw AS SELECT did, lang, unnest(keywords(text)) AS keyword, event_time FROM p;
         CREATE VIEW r AS SELECT lang, keyword, count(*) AS n, count(DISTINCT did) AS a,
             hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win FROM kw GROUP BY lang, keyword, win;
         CREATE VIEW l AS SELECT lang, keyword, count(*) AS n,
             hop(INTERVAL '1' MINUTE, INTERVAL '15' MINUTE) AS win FROM kw GROUP BY lang, keyword, win;
         CREATE VIEW rp AS SELECT lang, count(*) AS posts,
             hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win FROM p GROUP BY lang, win;
         CREATE VIEW lp AS SELECT lang, count(*) AS posts,
             hop(INTERVAL '1' MINUTE, INTERVAL '15' MINUTE) AS win FROM p GROUP BY lang, win;
         CREATE VIEW j AS
         SELECT l.win['end'] AS we, l.lang, l.keyword, coalesce(r.n, 0) AS n, coalesce(r.a, 0) AS a,
                l.n - coalesce(r.n, 0) AS b, rp.posts AS rposts, lp.posts - coalesce(rp.posts, 0) AS bposts,
                sum(coalesce(r.n, 0)) OVER (PARTITION BY l.win['end'], l.lang) AS rtotal
         FROM l LEFT JOIN r ON l.lang = r.lang AND l.keyword = r.keyword AND l.win['end'] = r.win['end']
                JOIN lp ON l.lang = lp.lang AND l.win['end'] = lp.win['end']
                LEFT JOIN rp ON l.lang = rp.lang AND l.win['end'] = rp.win['end'];
         INSERT INTO out SELECT we, lang, keyword, n, a, b, rposts, bposts, rtotal, score, rank FROM (
             SELECT *, ROW_NUMBER() OVER (PARTITION BY we, lang ORDER BY score DESC, keyword) AS rank
             FROM (SELECT *, (n - (b + 1.0) * rposts / bposts) / sqrt((b + 1.0) * rposts / bposts + 4.0) AS score
                   FROM j WHERE n >= 3 AND bposts > 0))
         WHERE rank <= 5",
        &format!(
            "{HOP_1M_5M_AND_15M},
             r AS (SELECT we, coalesce(langs[1], 'und') AS lang, keyword, count(*) AS n, count(DISTINCT did) AS a
                   FROM (SELECT we, did, langs, unnest(keywords(text)) AS keyword FROM r5) GROUP BY we, lang, keyword),
             l AS (SELECT we, coalesce(langs[1], 'und') AS lang, keyword, count(*) AS n
                   FROM (SELECT we, langs, unnest(keywords(text)) AS keyword FROM r15) GROUP BY we, lang, keyword),
             rp AS (SELECT we, coalesce(langs[1], 'und') AS lang, count(*) AS posts FROM r5 GROUP BY we, lang),
             lp AS (SELECT we, coalesce(langs[1], 'und') AS lang, count(*) AS posts FROM r15 GROUP BY we, lang),
             j AS (SELECT l.we, l.lang, l.keyword, coalesce(r.n, 0) AS n, coalesce(r.a, 0) AS a,
                          l.n - coalesce(r.n, 0) AS b, rp.posts AS rposts, lp.posts - coalesce(rp.posts, 0) AS bposts,
                          sum(coalesce(r.n, 0)) OVER (PARTITION BY l.we, l.lang) AS rtotal
                   FROM l LEFT JOIN r ON l.lang = r.lang AND l.keyword = r.keyword AND l.we = r.we
                          JOIN lp ON l.lang = lp.lang AND l.we = lp.we
                          LEFT JOIN rp ON l.lang = rp.lang AND l.we = rp.we)
             SELECT we, lang, keyword, n, a, b, rposts, bposts, rtotal, score, rank FROM (
                 SELECT *, ROW_NUMBER() OVER (PARTITION BY we, lang ORDER BY score DESC, keyword) AS rank
                 FROM (SELECT *, (n - (b + 1.0) * rposts / bposts) / sqrt((b + 1.0) * rposts / bposts + 4.0) AS score
                       FROM j WHERE n >= 3 AND bposts > 0))
             WHERE rank <= 5"
        ),
    )
    .await;
}

/// Windowed results of two aggregates, one output: UNION ALL per window end.
#[tokio::test]
async fn union_all_of_windowed_keyword_and_hashtag_counts() {
    check(
        "union_windows",
        standard_config(),
        "INSERT INTO out
         SELECT win['end'] AS we, 'keyword' AS kind, term, n FROM (
             SELECT keyword AS term, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
             FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts) GROUP BY keyword, win)
         UNION ALL
         SELECT win['end'] AS we, 'hashtag' AS kind, term, n FROM (
             SELECT tag AS term, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
             FROM (SELECT unnest(hashtags) AS tag, event_time FROM posts) GROUP BY tag, win)",
        &format!(
            "{TUMBLE_1M} SELECT we, 'keyword', keyword, count(*) FROM (SELECT we, unnest(keywords(text)) AS keyword FROM p) GROUP BY we, keyword
             UNION ALL
             SELECT we, 'hashtag', tag, count(*) FROM (SELECT we, unnest(hashtags) AS tag FROM p) GROUP BY we, tag"
        ),
    )
    .await;
}

/// Batch CTE `p`: each on-time post once per cumulating window of cumulate(1 min, 10 min) it
/// falls in: windows start every 10 minutes and end 1, 2, ... 10 minutes later.
const CUMULATE_1M_10M: &str = "WITH p AS (
    SELECT posts.*, to_timestamp_nanos((CAST(event_time AS BIGINT) / 600000000000) * 600000000000) AS ws,
                    to_timestamp_nanos((CAST(event_time AS BIGINT) / 600000000000) * 600000000000 + j * 60000000000) AS we
    FROM posts CROSS JOIN (VALUES (1), (2), (3), (4), (5), (6), (7), (8), (9), (10)) AS js(j)
    WHERE NOT late AND (CAST(event_time AS BIGINT) / 60000000000) % 10 < j)";

/// cumulate(step, max): running counts, exact distinct authors (entering and leaving with the
/// 10-minute cycle), and a merged aggregate (min), over shuffled input within the bound.
#[tokio::test]
async fn cumulate_counts_distinct_and_min_per_keyword() {
    let cfg = GeneratorConfig {
        out_of_order_ns: 4_000_000_000,
        ..standard_config()
    };
    check(
        "cumulate",
        cfg,
        "INSERT INTO out SELECT win['start'], win['end'], keyword, n, authors, first FROM (
           SELECT keyword, count(*) AS n, count(DISTINCT did) AS authors, min(event_time) AS first,
                  cumulate(INTERVAL '1' MINUTE, INTERVAL '10' MINUTE) AS win
           FROM (SELECT did, unnest(keywords(text)) AS keyword, event_time FROM posts)
           GROUP BY keyword, win)",
        &format!("{CUMULATE_1M_10M} SELECT ws, we, keyword, count(*), count(DISTINCT did), min(event_time) FROM (SELECT ws, we, did, event_time, unnest(keywords(text)) AS keyword FROM p) GROUP BY ws, we, keyword"),
    )
    .await;
}

/// Aggregates that cannot be subtracted (`avg`, `bit_xor`, `approx_distinct`), over a window
/// 30 slides wide on shuffled input: their windows come from sparse two-stacks of slice states
/// (prefixes of the newest slices, suffixes of the oldest, flipped every 30 slides).
#[tokio::test]
async fn two_stacks_over_a_wide_hop() {
    let cfg = GeneratorConfig {
        out_of_order_ns: 4_000_000_000,
        ..standard_config()
    };
    let ks: Vec<String> = (0..30).map(|k| format!("({k})")).collect();
    check(
        "stacks",
        cfg,
        "INSERT INTO out SELECT win['end'], lang, mean, x, approx FROM (
           SELECT coalesce(langs[1], 'none') AS lang, avg(character_length(text)) AS mean,
                  bit_xor(character_length(text)) AS x, approx_distinct(did) AS approx,
                  hop(INTERVAL '1' MINUTE, INTERVAL '30' MINUTE) AS win
           FROM posts GROUP BY lang, win)",
        &format!(
            "WITH p AS (
                SELECT posts.*, to_timestamp_nanos((CAST(event_time AS BIGINT) / 60000000000 - k) * 60000000000 + 1800000000000) AS we
                FROM posts CROSS JOIN (VALUES {}) AS ks(k) WHERE NOT late)
             SELECT we, coalesce(langs[1], 'none') AS lang, avg(character_length(text)),
                    bit_xor(character_length(text)), approx_distinct(did)
             FROM p GROUP BY we, lang",
            ks.join(", ")
        ),
    )
    .await;
}

/// The trend query's shape, where the window operator does the work of the plan above it: a
/// filtered recent window (HAVING evaluated in the window) inner-joined on every key with a
/// wider window of the same slices (emitted only for the recent window's keys), and an
/// integer sum running beside the counts.
#[tokio::test]
async fn having_and_join_pushed_into_shared_slices() {
    check(
        "pushdown",
        standard_config(),
        "CREATE VIEW kw AS SELECT did, coalesce(langs[1], 'und') AS lang, unnest(keywords(text)) AS keyword,
                                  CAST(length(text) AS INT) AS len, event_time FROM posts;
         CREATE VIEW r AS SELECT lang, keyword, count(*) AS n, count(DISTINCT did) AS a, sum(len) AS chars,
             hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win FROM kw GROUP BY lang, keyword, win
             HAVING count(*) >= 3 AND count(DISTINCT did) >= 2;
         CREATE VIEW l AS SELECT lang, keyword, count(*) AS n, sum(len) AS chars,
             hop(INTERVAL '1' MINUTE, INTERVAL '20' MINUTE) AS win FROM kw GROUP BY lang, keyword, win;
         INSERT INTO out SELECT r.win['end'] AS we, r.lang, r.keyword, r.n, r.a, r.chars, l.n - r.n AS before, l.chars
         FROM r JOIN l ON r.lang = l.lang AND r.keyword = l.keyword AND r.win['end'] = l.win['end']",
        "WITH p AS (
            SELECT posts.*, k, coalesce(langs[1], 'und') AS lang, CAST(length(text) AS INT) AS len,
                   (CAST(event_time AS BIGINT) / 60000000000 - k) * 60000000000 AS ws
            FROM posts CROSS JOIN (SELECT * FROM unnest(range(0, 20)) AS ks(k)) WHERE NOT late),
         kw AS (SELECT ws, k, did, lang, len, unnest(keywords(text)) AS keyword FROM p),
         r AS (SELECT to_timestamp_nanos(ws + 300000000000) AS we, lang, keyword, count(*) AS n,
                      count(DISTINCT did) AS a, sum(len) AS chars
               FROM kw WHERE k < 5 GROUP BY ws, lang, keyword HAVING count(*) >= 3 AND count(DISTINCT did) >= 2),
         l AS (SELECT to_timestamp_nanos(ws + 1200000000000) AS we, lang, keyword, count(*) AS n, sum(len) AS chars
               FROM kw GROUP BY ws, lang, keyword)
         SELECT r.we, r.lang, r.keyword, r.n, r.a, r.chars, l.n - r.n, l.chars
         FROM r JOIN l ON r.lang = l.lang AND r.keyword = l.keyword AND r.we = l.we",
    )
    .await;
}

/// session(gap) per keyword over input disordered beyond the watermark bound: rows older
/// than the watermark are dropped and counted, the rest form, per keyword, sessions of rows
/// less than 30 s apart (batch: a new session wherever the gap to the keyword's previous
/// row is 30 s or more), with counts, exact distinct authors and a merged aggregate (max).
#[tokio::test]
async fn session_per_keyword_with_disorder_and_late_rows() {
    let cfg = GeneratorConfig {
        out_of_order_ns: 9_000_000_000,
        ..standard_config()
    };
    let m = check(
        "session",
        cfg.clone(),
        "INSERT INTO out SELECT win['start'], win['end'], keyword, n, authors, last FROM (
           SELECT keyword, count(*) AS n, count(DISTINCT did) AS authors, max(event_time) AS last,
                  session(INTERVAL '30' SECOND) AS win
           FROM (SELECT did, unnest(keywords(text)) AS keyword, event_time FROM posts)
           GROUP BY keyword, win)",
        "WITH kw AS (SELECT did, event_time, CAST(event_time AS BIGINT) AS t, unnest(keywords(text)) AS keyword
                     FROM posts WHERE NOT late),
              s AS (SELECT *, CASE WHEN t - lag(t) OVER (PARTITION BY keyword ORDER BY t) < 30000000000
                                   THEN 0 ELSE 1 END AS new FROM kw),
              g AS (SELECT *, sum(new) OVER (PARTITION BY keyword ORDER BY t
                                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM s)
         SELECT min(event_time), to_timestamp_nanos(max(t) + 30000000000), keyword, count(*),
                count(DISTINCT did), max(event_time)
         FROM g GROUP BY keyword, sid",
    )
    .await;
    let late = late_rows(&load_posts(&synthetic_file("session", cfg), DELAY_NS));
    assert!(late > 10, "the input must hold late rows ({late})");
    assert_eq!(m.late_rows as usize, late);
    assert!(m.windows_emitted > 1000, "{} sessions", m.windows_emitted);
}
