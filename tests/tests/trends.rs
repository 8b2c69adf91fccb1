//! The shipped trend query, `sql/trends.sql`, end to end with its real sinks: posts from the
//! synthetic firehose with a planted burst, TrendAlert rows into Redis, a Kafka topic and the
//! lake — the same rows in all three.

use std::collections::BTreeMap;

use redis::AsyncCommands;
use skystream_tests::services::{create_topic, kafka, read_topic, unique_topic};
use skystream_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trend_alerts_reach_redis_kafka_and_the_lake() {
    let sql = std::fs::read_to_string(repo_root().join("sql/trends.sql")).unwrap();
    let bootstrap = kafka();
    let topic = unique_topic("trend-alerts");
    create_topic(&bootstrap, &topic, 1).await;
    let redis_url =
        std::env::var("SKYSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let key = unique_topic("trending");
    let lake = std::env::temp_dir().join(unique_topic("trends-lake"));
    let params: BTreeMap<String, String> = [
        ("kafka", bootstrap.clone()),
        ("alerts_topic", topic.clone()),
        ("redis", redis_url.clone()),
        ("redis_key", key.clone()),
        ("lake", lake.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let sql = skystream_sql::params::substitute(&sql, &params).unwrap();
    // 80 minutes of posts: an hour of baseline, then "eclipse" at 6x for 8 minutes.
    let posts = synthetic_posts(&[
        ("seed", "9"),
        ("rate", "30"),
        ("duration", "80m"),
        ("bursts", "eclipse:68m:8m:6:en"),
    ]);
    let reg = skystream_registry::registry();
    let opts = skystream_sql::PlanOptions {
        tables: [("posts".to_string(), posts)].into(),
        ..Default::default()
    };
    let planned = skystream_sql::plan_script_with(&sql, &reg, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    planned.pipeline.run().await.unwrap();

    // The lake: keyword | lang | window_start | window_end | ... | rank.
    let lake_rows = read_lake(&lake_url(&lake.join("trend_alerts")), None).await;
    let fields = |r: &String| r.split(" | ").map(str::to_string).collect::<Vec<_>>();
    let mut lake_kw: Vec<String> = lake_rows.iter().map(|r| fields(r)[0].clone()).collect();
    lake_kw.sort();
    assert!(lake_kw.iter().any(|k| k == "eclipse"), "{lake_rows:#?}");
    // One row per keyword and window (the burst's word also trends among untagged posts: the
    // stronger group is kept), ranks 1.. within each window.
    let mut per_window: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &lake_rows {
        let f = fields(r);
        *per_window.entry((f[3].clone(), f[0].clone())).or_default() += 1;
    }
    assert!(per_window.values().all(|&n| n == 1), "{lake_rows:#?}");
    // Kafka: one JSON message per row, keyed by keyword.
    let msgs = read_topic(&bootstrap, &topic);
    let mut kafka_kw: Vec<String> = msgs
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(m.key.as_deref(), v["keyword"].as_str().map(str::as_bytes));
            v["keyword"].as_str().unwrap().to_string()
        })
        .collect();
    kafka_kw.sort();
    assert_eq!(kafka_kw, lake_kw);
    // Redis: the latest window's ranking holds the lake's rows of that window.
    let last_end = lake_rows
        .iter()
        .map(|r| fields(r)[3].clone())
        .max()
        .unwrap();
    let mut want: Vec<String> = lake_rows
        .iter()
        .filter(|r| fields(r)[3] == last_end)
        .map(|r| fields(r)[0].clone())
        .collect();
    want.sort();
    let mut c = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let latest: String = c.get(format!("{key}:latest")).await.unwrap();
    let mut members: Vec<String> = c.zrevrange(format!("{key}:{latest}"), 0, -1).await.unwrap();
    members.sort();
    assert_eq!(members, want);
    let _ = std::fs::remove_dir_all(&lake);
}
