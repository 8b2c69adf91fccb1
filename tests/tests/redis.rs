//! The Redis sink against a real redis-server (scripts/services.sh): ranked windows with a
//! `latest` pointer, idempotent rewrites, hashes with TTL, pub/sub, and a Redis that is down
//! when the pipeline starts.

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::AsArray;
use redis::AsyncCommands;
use skystream_synthetic::GeneratorConfig;
use skystream_tests::services::unique_topic;
use skystream_tests::*;

fn redis_url() -> String {
    std::env::var("SKYSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("no Redis at {url} ({e}): run scripts/services.sh"))
}

fn input(name: &str) -> std::path::PathBuf {
    synthetic_file(
        name,
        GeneratorConfig {
            seed: 5,
            rate: 2.0,
            duration_ns: Some(12 * 60 * 1_000_000_000),
            authors: 200,
            tail_words: 200,
            ..Default::default()
        },
    )
}

/// Top-5 keywords per 1-minute window, to memory and to the sink declared by `sink_with`.
fn script(path: &std::path::Path, sink_with: &str) -> String {
    format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'replay', path = '{}');
         CREATE TABLE out WITH (connector = 'memory');
         CREATE TABLE r WITH ({sink_with});
         CREATE VIEW top AS SELECT window_end, keyword, n FROM (
           SELECT win['end'] AS window_end, keyword, n,
                  ROW_NUMBER() OVER (PARTITION BY win ORDER BY n DESC, keyword) AS rn
           FROM (SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
                 FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
                 GROUP BY keyword, win))
         WHERE rn <= 5;
         INSERT INTO out SELECT * FROM top;
         INSERT INTO r SELECT * FROM top;",
        path.display()
    )
}

/// (window ms, keyword, count) rows of the memory table.
fn expected(batches: &[arrow::array::RecordBatch]) -> BTreeMap<i64, BTreeMap<String, f64>> {
    let mut m: BTreeMap<i64, BTreeMap<String, f64>> = BTreeMap::new();
    for b in batches {
        let w = arrow::compute::cast(
            b.column(0),
            &arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, None),
        )
        .unwrap();
        let w = w.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let k = b.column(1).as_string::<i32>();
        let n = arrow::compute::cast(b.column(2), &arrow::datatypes::DataType::Float64).unwrap();
        let n = n.as_primitive::<arrow::datatypes::Float64Type>();
        for i in 0..b.num_rows() {
            m.entry(w.value(i))
                .or_default()
                .insert(k.value(i).to_string(), n.value(i));
        }
    }
    m
}

async fn ranking_state(
    c: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> (Option<i64>, BTreeMap<i64, BTreeMap<String, f64>>) {
    let latest: Option<i64> = c.get(format!("{prefix}:latest")).await.unwrap();
    let keys: Vec<String> = c.keys(format!("{prefix}:*")).await.unwrap();
    let mut m = BTreeMap::new();
    for k in keys {
        let Ok(w) = k.rsplit(':').next().unwrap().parse::<i64>() else {
            continue;
        };
        let members: Vec<(String, f64)> = c.zrange_withscores(&k, 0, -1).await.unwrap();
        m.insert(w, members.into_iter().collect());
    }
    (latest, m)
}

#[tokio::test]
async fn ranking_per_window_with_latest_pointer_is_idempotent() {
    let url = redis_url();
    let mut c = conn(&url).await;
    let prefix = unique_topic("trending");
    let path = input("redis_rank");
    let sql = script(
        &path,
        &format!(
            "connector = 'redis', url = '{url}', layout = 'ranking', key = '{prefix}',
             window = 'window_end', member = 'keyword', score = 'n', ttl = '10m'"
        ),
    );
    let (out, _) = run_stream(&sql, "out").await;
    let want = expected(&out);
    assert!(want.len() >= 10, "{} windows", want.len());
    let (latest, got) = ranking_state(&mut c, &prefix).await;
    assert_eq!(got, want);
    assert_eq!(latest, want.keys().next_back().copied());
    let ttl: i64 = c
        .ttl(format!("{prefix}:{}", want.keys().next().unwrap()))
        .await
        .unwrap();
    assert!(ttl > 500 && ttl <= 600, "{ttl}");
    // The same windows written again leave the same state.
    run_stream(&sql, "out").await;
    assert_eq!(ranking_state(&mut c, &prefix).await, (latest, want));
}

#[tokio::test]
async fn hash_rows_and_publish() {
    let url = redis_url();
    let mut c = conn(&url).await;
    let prefix = unique_topic("kw");
    let path = input("redis_hash");
    let sql = script(
        &path,
        &format!(
            "connector = 'redis', url = '{url}', layout = 'hash', key = '{prefix}',
             key_columns = 'window_end, keyword', ttl = '5m'"
        ),
    );
    let (out, _) = run_stream(&sql, "out").await;
    let n_rows: usize = out.iter().map(|b| b.num_rows()).sum();
    let keys: Vec<String> = c.keys(format!("{prefix}:*")).await.unwrap();
    assert_eq!(keys.len(), n_rows);
    let h: BTreeMap<String, String> = c.hgetall(&keys[0]).await.unwrap();
    assert_eq!(
        h.keys().cloned().collect::<Vec<_>>(),
        ["keyword", "n", "window_end"]
    );
    assert!(keys[0].ends_with(&format!(":{}", h["keyword"])));
    let ttl: i64 = c.ttl(&keys[0]).await.unwrap();
    assert!(ttl > 200 && ttl <= 300, "{ttl}");

    // Pub/sub: a subscriber sees every row as JSON.
    let channel = unique_topic("alerts");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let sql = script(
        &path,
        &format!("connector = 'redis', url = '{url}', layout = 'publish', channel = '{channel}'"),
    );
    run_stream(&sql, "out").await;
    let mut stream = pubsub.on_message();
    let mut got = 0;
    while got < n_rows {
        let msg = tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut stream),
        )
        .await
        .expect("a published row")
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
        assert!(v["keyword"].is_string() && v["n"].is_number());
        got += 1;
    }
}

#[tokio::test]
async fn redis_down_at_start_then_up_loses_nothing() {
    // A Redis of the test's own, started only after the pipeline has begun writing.
    let port = 16391;
    let url = format!("redis://127.0.0.1:{port}");
    let prefix = unique_topic("late");
    let path = input("redis_down");
    let sql = script(
        &path,
        &format!(
            "connector = 'redis', url = '{url}', layout = 'ranking', key = '{prefix}',
             window = 'window_end', member = 'keyword', score = 'n'"
        ),
    );
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server")
    });
    let reg = skystream_registry::registry();
    let p = skystream_sql::plan_script(&sql, &reg)
        .await
        .unwrap()
        .pipeline;
    let metrics = p.metrics();
    // While Redis is down the pipeline reports the sink as degraded.
    let watcher = tokio::spawn(async move {
        let mut seen = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            seen |= !metrics.snapshot().degraded_sinks.is_empty();
        }
        seen
    });
    let summary = tokio::time::timeout(Duration::from_secs(60), p.run())
        .await
        .expect("the pipeline did not recover")
        .unwrap();
    assert!(summary.completed);
    assert!(
        watcher.await.unwrap(),
        "the sink was never reported degraded"
    );
    assert!(summary.metrics.sink_retries > 0);
    assert!(summary.metrics.degraded_sinks.is_empty());
    let out: Vec<_> = reg
        .memory()
        .batches("out")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let mut server = starter.await.unwrap();
    let mut c = conn(&url).await;
    let (_, got) = ranking_state(&mut c, &prefix).await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(got, expected(&out));
}
