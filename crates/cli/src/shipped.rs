//! The pipeline scripts of `sql/`, embedded so the commands that run them work from any
//! directory.

/// `skystream demo`: top keywords of a synthetic firehose.
pub const DEMO: &str = include_str!("../../../sql/demo.sql");
/// Trend detection: TrendAlert rows to Redis, Kafka and the lake.
pub const TRENDS: &str = include_str!("../../../sql/trends.sql");
/// The naive ranking `skystream eval` compares with: most frequent keywords.
pub const TOP_COUNTS: &str = include_str!("../../../sql/top_counts.sql");

/// Keyword counts per language and minute into the lake.
pub const KEYWORD_COUNTS: &str = include_str!("../../../sql/keyword_counts.sql");
/// Hashtag counts per language and minute into the lake.
pub const HASHTAG_COUNTS: &str = include_str!("../../../sql/hashtag_counts.sql");
/// Posts per language and minute into the lake.
pub const POST_VOLUME: &str = include_str!("../../../sql/post_volume.sql");

/// The shipped scripts by name (`trends`, `sql/trends.sql` and `trends.sql` all name
/// [`TRENDS`]).
pub fn by_name(name: &str) -> Option<&'static str> {
    let base = name.rsplit('/').next()?.trim_end_matches(".sql");
    Some(match base {
        "demo" => DEMO,
        "trends" => TRENDS,
        "top_counts" => TOP_COUNTS,
        "keyword_counts" => KEYWORD_COUNTS,
        "hashtag_counts" => HASHTAG_COUNTS,
        "post_volume" => POST_VOLUME,
        _ => return None,
    })
}

/// The sink tables of [`TRENDS`] (all receive the same rows).
pub const TREND_SINKS: [&str; 3] = [
    "trend_alerts_redis",
    "trend_alerts_kafka",
    "trend_alerts_lake",
];

/// Table options that make a shipped script read `posts` from `source` and write every sink
/// of `sinks` to memory (benchmarks, `eval`).
pub fn in_memory(
    source: std::collections::BTreeMap<String, String>,
    sinks: &[&str],
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let mut tables = std::collections::BTreeMap::new();
    tables.insert("posts".to_string(), source);
    for s in sinks {
        tables.insert(
            s.to_string(),
            [("connector".to_string(), "memory".to_string())].into(),
        );
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn defaults(sql: &str, sets: &[(&str, &str)]) -> String {
        let params = sets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        skystream_sql::params::substitute(sql, &params).unwrap()
    }

    fn synthetic(minutes: u32) -> BTreeMap<String, String> {
        [
            ("connector", "synthetic"),
            ("seed", "3"),
            ("rate", "40"),
            ("duration", &format!("{minutes}m")),
            ("start", "2026-07-04T12:00:00Z"),
            ("speed", "max"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Every script of `sql/` plans as shipped, with its parameters' defaults and its real
    /// connectors (nothing is read or written: planning opens no connection).
    #[tokio::test]
    async fn every_shipped_script_plans_with_its_connectors() {
        let reg = skystream_registry::registry();
        let dir = std::env::temp_dir().join(format!("skystream-shipped-{}", std::process::id()));
        let lake = dir.to_string_lossy().to_string();
        let mut files: Vec<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
        files.sort();
        assert_eq!(files.len(), 6, "every script of sql/ is shipped: {files:?}");
        for name in files {
            let sql = by_name(&name).unwrap_or_else(|| panic!("sql/{name} is not shipped"));
            let sql = defaults(sql, &[("lake", &lake)]);
            let p = skystream_sql::plan_script(&sql, &reg)
                .await
                .unwrap_or_else(|e| panic!("sql/{name}.sql: {e}"));
            assert!(!p.outputs.is_empty(), "sql/{name}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The three INSERTs of the trend query select the same rows: one flow computes them once
    /// and writes every sink.
    #[tokio::test]
    async fn the_trend_sinks_share_one_flow() {
        let reg = skystream_registry::registry();
        let opts = skystream_sql::PlanOptions {
            tables: in_memory(synthetic(1), &TREND_SINKS),
            ..Default::default()
        };
        let p = skystream_sql::plan_script_with(&defaults(TRENDS, &[]), &reg, &opts)
            .await
            .unwrap();
        assert_eq!(p.outputs, TREND_SINKS);
        assert_eq!(
            p.explain.matches("one flow writes both").count(),
            2,
            "{}",
            p.explain
        );
        // A language filter and thresholds are parameters.
        let filtered = defaults(TRENDS, &[("languages", "ja,pt"), ("min_score", "3")]);
        assert!(filtered.contains("string_to_array('ja,pt', ',')"));
        skystream_sql::plan_script_with(&filtered, &reg, &opts)
            .await
            .unwrap();
    }

    /// Keyword and hashtag counts, run over a synthetic stream with their source and sink
    /// replaced (as `skystream run --with` does), write WindowedKeywordCount rows.
    #[tokio::test]
    async fn counts_write_windowed_keyword_count_rows() {
        let want = skystream_model::windowed_keyword_count_schema();
        let cols = |s: &arrow::datatypes::Schema| {
            s.fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect::<Vec<_>>()
        };
        for (sql, sink) in [
            (KEYWORD_COUNTS, "keyword_counts"),
            (HASHTAG_COUNTS, "hashtag_counts"),
        ] {
            let reg = skystream_registry::registry();
            let opts = skystream_sql::PlanOptions {
                tables: in_memory(synthetic(3), &[sink]),
                ..Default::default()
            };
            let p = skystream_sql::plan_script_with(&defaults(sql, &[]), &reg, &opts)
                .await
                .unwrap();
            p.pipeline.run().await.unwrap();
            let (_, batches) = reg.memory().batches(sink).unwrap();
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert!(rows > 0, "{sink}: no rows");
            for b in &batches {
                assert_eq!(cols(&b.schema()), cols(&want), "{sink}");
            }
        }
    }

    /// Post volume: one row per language and minute, and the counts add up to the posts.
    #[tokio::test]
    async fn post_volume_counts_every_post_once() {
        let reg = skystream_registry::registry();
        let opts = skystream_sql::PlanOptions {
            tables: in_memory(synthetic(3), &["post_volume"]),
            ..Default::default()
        };
        let p = skystream_sql::plan_script_with(&defaults(POST_VOLUME, &[]), &reg, &opts)
            .await
            .unwrap();
        let metrics = p.pipeline.run().await.unwrap().metrics;
        let (_, batches) = reg.memory().batches("post_volume").unwrap();
        let mut total = 0u64;
        let mut keys = std::collections::BTreeSet::new();
        for b in &batches {
            let end = b.column_by_name("window_end").unwrap();
            let end = arrow::compute::cast(end, &arrow::datatypes::DataType::Int64).unwrap();
            let end = end
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            let lang = arrow::compute::cast(
                b.column_by_name("lang").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let lang = lang
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            let posts = b.column_by_name("posts").unwrap();
            let posts = posts
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            for i in 0..b.num_rows() {
                assert!(keys.insert((end.value(i), lang.value(i).to_string())));
                total += posts.value(i) as u64;
            }
        }
        assert!(keys.len() > 1);
        assert_eq!(metrics.late_rows, 0);
        assert_eq!(total, metrics.rows_in);
    }
}
