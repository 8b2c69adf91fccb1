//! Jetstream → `ingest` → Kafka → SQL, against a real Kafka-protocol broker (tansu; see
//! scripts/services.sh): results equal those over the file directly; dropped Jetstream
//! connections, an ingest restart and a broker restart lose and duplicate nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig as KafkaConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use skystream_jetstream::client::ClientConfig;
use skystream_jetstream::event::Envelope;
use skystream_jetstream::server::{EventLog, Server, ServerConfig};
use skystream_kafka::ingest::{IngestConfig, IngestStats};
use skystream_synthetic::{Burst, GeneratorConfig};
use skystream_tests::services::*;
use skystream_tests::*;

async fn start_server(path: &Path, config: ServerConfig) -> Server {
    let log = EventLog::from_jsonl(&std::fs::read(path).unwrap());
    Server::start("127.0.0.1:0".parse().unwrap(), Arc::new(log), config)
        .await
        .unwrap()
}

fn ingest_config(server: &Server, bootstrap: &str, topic: &str, cursor: &Path) -> IngestConfig {
    let mut js = ClientConfig::new(server.url());
    js.compress = true;
    js.backoff_initial = Duration::from_millis(20);
    IngestConfig {
        jetstream: js,
        bootstrap_servers: bootstrap.into(),
        topic: topic.into(),
        kafka: vec![],
        cursor_file: Some(cursor.to_path_buf()),
        max_events: None,
        idle_exit: Some(Duration::from_secs(2)),
        cursor_interval: Duration::from_millis(200),
    }
}

async fn ingest(config: IngestConfig) -> skystream_kafka::ingest::IngestSummary {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    tokio::time::timeout(
        Duration::from_secs(120),
        skystream_kafka::ingest::run(config, Arc::new(IngestStats::default()), rx),
    )
    .await
    .expect("ingest did not finish")
    .expect("ingest failed")
}

/// Post-collection events of a file, as a multiset of their JSON.
fn post_events(path: &Path) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for line in std::fs::read(path).unwrap().split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if let Ok(e) = Envelope::parse(line)
            && e.collection.as_deref() == Some("app.bsky.feed.post")
        {
            *m.entry(line.to_vec()).or_insert(0) += 1;
        }
    }
    m
}

/// Checks a topic holds exactly the events (each once), keyed by DID, stamped with time_us.
fn assert_topic_holds(msgs: &[Msg], want: &BTreeMap<Vec<u8>, usize>) {
    let mut got = BTreeMap::new();
    for m in msgs {
        let e = Envelope::parse(&m.payload).expect("a Jetstream event");
        assert_eq!(m.key.as_deref(), Some(e.did.as_bytes()));
        assert_eq!(m.timestamp_ms, Some(e.time_us / 1000));
        *got.entry(m.payload.clone()).or_insert(0) += 1;
    }
    let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
    let dups = got.values().filter(|&&n| n > 1).count();
    assert_eq!(
        (got.len(), missing, dups),
        (want.len(), 0, 0),
        "events stored: {} distinct of {}; {missing} missing; {dups} duplicated",
        got.len(),
        want.len()
    );
}

fn synthetic(name: &str, posts: u64) -> std::path::PathBuf {
    synthetic_file(
        name,
        GeneratorConfig {
            seed: 11,
            rate: 3.0,
            count: Some(posts),
            other_events: 0.4,
            authors: 500,
            tail_words: 300,
            bursts: vec![Burst::parse("eclipse:3m:5m:8").unwrap()],
            ..Default::default()
        },
    )
}

const HOP_COUNTS: &str = "SELECT win['start'] AS ws, win['end'] AS we, keyword, n, authors FROM (
       SELECT keyword, count(*) AS n, count(DISTINCT did) AS authors,
              hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
       FROM (SELECT unnest(keywords(text)) AS keyword, did, event_time FROM posts)
       GROUP BY keyword, win)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_then_sql_over_kafka_equals_sql_over_the_file() {
    let bootstrap = kafka();
    let path = synthetic("kafka_e2e", 2000);
    let topic = unique_topic("posts");
    create_topic(&bootstrap, &topic, 3).await;
    let server = start_server(&path, ServerConfig::default()).await;
    let cursor = path.with_file_name("cursor.json");
    let summary = ingest(ingest_config(&server, &bootstrap, &topic, &cursor)).await;
    let want = post_events(&path);
    let n = want.values().sum::<usize>();
    assert_eq!(summary.produced as usize, n);
    assert_topic_holds(&read_topic(&bootstrap, &topic), &want);

    // The same windows over Kafka (three partitions, per-partition watermarks) and the file;
    // the Kafka run also writes its rows to a topic keyed by keyword.
    let out_topic = unique_topic("counts");
    create_topic(&bootstrap, &out_topic, 2).await;
    let over_kafka = format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'kafka', bootstrap_servers = '{bootstrap}', topic = '{topic}',
               format = 'jetstream', bounded = 'latest', batch_size = '300');
         CREATE TABLE out WITH (connector = 'memory');
         CREATE TABLE counts WITH (connector = 'kafka', bootstrap_servers = '{bootstrap}',
               topic = '{out_topic}', key = 'keyword');
         INSERT INTO out {HOP_COUNTS};
         INSERT INTO counts {HOP_COUNTS};"
    );
    let over_file = format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'replay', path = '{}');
         CREATE TABLE out WITH (connector = 'memory');
         INSERT INTO out {HOP_COUNTS};",
        path.display()
    );
    let (k, km) = run_stream(&over_kafka, "out").await;
    let (f, fm) = run_stream(&over_file, "out").await;
    assert_eq!((km.late_rows, fm.late_rows), (0, 0));
    assert!(!f.is_empty());
    assert_eq!(rows(&k), rows(&f));
    // The sink topic: one JSON message per row, keyed by its keyword.
    let msgs = read_topic(&bootstrap, &out_topic);
    assert_eq!(msgs.len(), rows(&k).len());
    for m in &msgs {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            m.key.as_deref(),
            Some(v["keyword"].as_str().unwrap().as_bytes())
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_jetstream_connections_and_an_ingest_restart_store_each_event_once() {
    let bootstrap = kafka();
    let path = synthetic("kafka_drops", 1500);
    let topic = unique_topic("drops");
    create_topic(&bootstrap, &topic, 2).await;
    // Every connection is cut after 61 events.
    let server = start_server(
        &path,
        ServerConfig {
            rate: None,
            drop_after: Some(61),
        },
    )
    .await;
    let cursor = path.with_file_name("cursor.json");
    // First run: stops after 400 events; the second resumes from the stored cursor.
    let mut first = ingest_config(&server, &bootstrap, &topic, &cursor);
    first.max_events = Some(400);
    let s1 = ingest(first).await;
    assert_eq!(s1.received, 400);
    let stored = skystream_kafka::ingest::load_cursor(&cursor)
        .unwrap()
        .unwrap();
    assert_eq!(Some(stored), s1.cursor);
    ingest(ingest_config(&server, &bootstrap, &topic, &cursor)).await;
    assert!(
        server
            .stats
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            > 10
    );
    let want = post_events(&path);
    assert_topic_holds(&read_topic(&bootstrap, &topic), &want);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_and_restarted_during_ingest_loses_nothing() {
    let mut broker = OwnBroker::start(19093);
    let bootstrap = broker.addr.clone();
    let path = synthetic("kafka_restart", 1500);
    let topic = unique_topic("restart");
    create_topic(&bootstrap, &topic, 2).await;
    // Paced: the ingest is mid-stream when the broker dies.
    let server = start_server(
        &path,
        ServerConfig {
            rate: Some(500.0),
            drop_after: None,
        },
    )
    .await;
    let cursor = path.with_file_name("cursor.json");
    let stats = Arc::new(IngestStats::default());
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let mut config = ingest_config(&server, &bootstrap, &topic, &cursor);
    config.idle_exit = Some(Duration::from_secs(4));
    let run = tokio::spawn(skystream_kafka::ingest::run(config, stats.clone(), rx));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = stats.produced.load(std::sync::atomic::Ordering::Relaxed);
    broker.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("ingest did not finish")
        .unwrap()
        .expect("ingest failed");
    let want = post_events(&path);
    assert!(
        before > 0 && (before as usize) < want.values().sum::<usize>(),
        "{before}"
    );
    assert_eq!(summary.produced as usize, want.values().sum::<usize>());
    assert_topic_holds(&read_topic(&bootstrap, &topic), &want);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_behind_the_others_is_not_late() {
    let bootstrap = kafka();
    let topic = unique_topic("lagging");
    create_topic(&bootstrap, &topic, 2).await;
    // Partition 0 gets 40 minutes of rows first, then partition 1 the same 40 minutes: read
    // together, partition 1 is far behind partition 0 in event time.
    let producer: FutureProducer = KafkaConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let t0 = 1_783_166_400_000i64; // ms
    let (producer, topic_ref) = (&producer, topic.as_str());
    for p in 0..2 {
        let mut pending = Vec::new();
        for i in 0..2400 {
            let row = format!(
                r#"{{"ts":"{}","v":{i}}}"#,
                skystream_engine::time::format_ns((t0 + i as i64 * 1000) * 1_000_000)
            );
            pending.push(async move {
                producer
                    .send(
                        FutureRecord::<str, str>::to(topic_ref)
                            .partition(p)
                            .payload(&row),
                        Duration::from_secs(10),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            });
        }
        for r in futures::future::join_all(pending).await {
            r.unwrap();
        }
    }
    let sql = format!(
        "CREATE TABLE t (ts TIMESTAMP, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH (connector = 'kafka', bootstrap_servers = '{bootstrap}', topic = '{topic}',
               bounded = 'latest', batch_size = '100');
         CREATE TABLE out WITH (connector = 'memory');
         INSERT INTO out SELECT win['start'] AS ws, n FROM (
           SELECT count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win FROM t GROUP BY win);"
    );
    let (out, m) = run_stream(&sql, "out").await;
    assert_eq!(m.late_rows, 0);
    let r = rows(&out);
    assert_eq!(r.len(), 40);
    assert!(r.iter().all(|row| row.ends_with("| 120")), "{r:?}");
}
