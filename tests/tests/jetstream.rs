//! The Jetstream client against the local Jetstream server: recorded events, compression,
//! filters, and reconnects that lose and repeat nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use skystream_engine::format::RecordDecoder;
use skystream_jetstream::JetstreamDecoder;
use skystream_jetstream::client::{Client, ClientConfig};
use skystream_jetstream::event::Envelope;
use skystream_jetstream::server::{EventLog, Server, ServerConfig};
use skystream_synthetic::GeneratorConfig;
use skystream_tests::*;

fn recorded() -> Vec<u8> {
    std::fs::read(repo_root().join("testdata/jetstream/expected_v1.jsonl")).unwrap()
}

async fn server(data: &[u8], config: ServerConfig) -> Server {
    let log = EventLog::from_jsonl(data);
    Server::start("127.0.0.1:0".parse().unwrap(), Arc::new(log), config)
        .await
        .unwrap()
}

/// Reads `n` events from `client`, failing after 30 s.
async fn take(client: &mut Client, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while out.len() < n {
            out.push(client.next().await.unwrap().json);
        }
    })
    .await;
    assert!(r.is_ok(), "only {} of {n} events arrived", out.len());
    out
}

/// The events of `data` a subscription to `collections` receives, as a multiset.
fn expected(data: &[u8], collections: &[String]) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for line in data.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if let Ok(e) = Envelope::parse(line)
            && e.wanted_collection(collections)
        {
            *m.entry(line.to_vec()).or_insert(0) += 1;
        }
    }
    m
}

fn multiset(events: &[Vec<u8>]) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(e.clone()).or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn recorded_events_parse_compressed_and_not() {
    let data = recorded();
    let s = server(&data, ServerConfig::default()).await;
    for compress in [false, true] {
        let mut c = ClientConfig::new(s.url());
        c.compress = compress;
        let want = expected(&data, &c.wanted_collections);
        let mut client = Client::new(c).unwrap();
        let events = take(&mut client, want.values().sum()).await;
        assert_eq!(multiset(&events), want, "compress={compress}");
        let mut d = JetstreamDecoder::new(None);
        for e in &events {
            d.push(e).unwrap();
        }
        let posts = d.flush().unwrap().map(|b| b.num_rows()).unwrap_or(0);
        assert_eq!(
            posts, 17,
            "post creates in expected_v1.jsonl (compress={compress})"
        );
        assert_eq!(client.stats().malformed.load(Ordering::Relaxed), 0);
    }
    // Every kind, all collections: the whole file.
    let mut c = ClientConfig::new(s.url());
    c.wanted_collections.clear();
    c.compress = true;
    let all = expected(&data, &[]);
    assert!(all.values().sum::<usize>() >= 150);
    let mut client = Client::new(c).unwrap();
    assert_eq!(multiset(&take(&mut client, all.values().sum()).await), all);
    s.shutdown().await;
}

#[tokio::test]
async fn dropped_connections_lose_and_repeat_nothing() {
    let path = synthetic_file(
        "js_drops",
        GeneratorConfig {
            seed: 3,
            rate: 20.0,
            count: Some(1500),
            other_events: 0.5,
            ..Default::default()
        },
    );
    let data = std::fs::read(&path).unwrap();
    for compress in [false, true] {
        // The server cuts every connection after 97 events, with no close frame.
        let s = server(
            &data,
            ServerConfig {
                rate: None,
                drop_after: Some(97),
            },
        )
        .await;
        let mut c = ClientConfig::new(s.url());
        c.compress = compress;
        c.backoff_initial = std::time::Duration::from_millis(10);
        let want = expected(&data, &c.wanted_collections);
        let n: usize = want.values().sum();
        let mut client = Client::new(c).unwrap();
        let events = take(&mut client, n).await;
        assert_eq!(multiset(&events), want);
        let st = client.stats();
        let reconnects = st.reconnects.load(Ordering::Relaxed);
        assert!(reconnects as usize >= n / 97 - 1, "{reconnects} reconnects");
        // The resume margin makes the server replay an overlap, which the client skipped.
        assert!(st.duplicates.load(Ordering::Relaxed) > 0);
        s.shutdown().await;
    }
}

#[tokio::test]
async fn filters_and_options_update() {
    let data = recorded();
    let s = server(&data, ServerConfig::default()).await;
    // A DID filter: only that author's events.
    let first_post = data
        .split(|&b| b == b'\n')
        .filter_map(|l| Envelope::parse(l).ok())
        .find(|e| e.collection.as_deref() == Some("app.bsky.feed.post"))
        .unwrap();
    let mut c = ClientConfig::new(s.url());
    c.wanted_dids = vec![first_post.did.clone()];
    let mut client = Client::new(c).unwrap();
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), client.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.envelope.did, first_post.did);
    // A bad cursor is refused before the upgrade (HTTP 400), and the client gives up as told.
    let bad = format!("{}?cursor=yesterday", s.url());
    assert!(tokio_tungstenite_connect_fails(&bad).await);
    let mut c = ClientConfig::new("ws://127.0.0.1:1/subscribe");
    c.max_attempts = Some(2);
    c.backoff_initial = std::time::Duration::from_millis(5);
    let err = Client::new(c).unwrap().next().await.unwrap_err();
    assert!(err.to_string().contains("after 2 attempts"), "{err}");
    // options_update changes a running subscription from likes to posts (a paced server, so the
    // update arrives while most of the file is still to be sent).
    let paced = server(
        &data,
        ServerConfig {
            rate: Some(100.0),
            drop_after: None,
        },
    )
    .await;
    let mut c = ClientConfig::new(paced.url());
    c.wanted_collections = vec!["app.bsky.feed.like".into()];
    let mut client = Client::new(c).unwrap();
    let first = client.next().await.unwrap();
    assert_eq!(
        first.envelope.collection.as_deref(),
        Some("app.bsky.feed.like")
    );
    client
        .update_options(vec!["app.bsky.feed.post".into()], vec![])
        .await
        .unwrap();
    // Likes already on the wire may still arrive; then posts, which the first filter refused.
    let post = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let e = client.next().await.unwrap();
            if e.envelope.collection.as_deref() == Some("app.bsky.feed.post") {
                return e;
            }
            // Identity and account events pass every collection filter, as on Jetstream.
            assert!(
                matches!(
                    e.envelope.collection.as_deref(),
                    None | Some("app.bsky.feed.like")
                ),
                "{:?}",
                e.envelope
            );
        }
    })
    .await
    .expect("no post after options_update");
    assert!(post.envelope.time_us >= first.envelope.time_us);
    assert!(
        client
            .update_options(vec!["not an nsid".into()], vec![])
            .await
            .is_err()
    );
    paced.shutdown().await;
    s.shutdown().await;
}

async fn tokio_tungstenite_connect_fails(url: &str) -> bool {
    let mut c = ClientConfig::new(url);
    c.wanted_collections.clear();
    c.max_attempts = Some(1);
    Client::new(c).unwrap().next().await.is_err()
}

#[tokio::test]
async fn jetstream_sql_source_reads_posts() {
    let data = recorded();
    let s = server(&data, ServerConfig::default()).await;
    let sql = format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'jetstream', url = '{}', linger = '50ms');
         CREATE TABLE out WITH (connector = 'memory');
         INSERT INTO out SELECT uri, did, text FROM posts;",
        s.url()
    );
    let reg = skystream_registry::registry();
    let planned = skystream_sql::plan_script(&sql, &reg).await.unwrap();
    let stop = planned.pipeline.stop_handle();
    let metrics = planned.pipeline.metrics();
    let run = tokio::spawn(planned.pipeline.run());
    // A live source never ends: wait for the 17 post creates, then stop it.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while metrics.snapshot().rows_out < 17 && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.stop();
    let summary = run.await.unwrap().unwrap();
    assert!(!summary.completed);
    let (_, batches) = reg.memory().batches("out").unwrap();
    assert_eq!(rows(&batches).len(), 17);
    // Deletes and updates of posts in the sample are filtered, not rows.
    assert_eq!(summary.metrics.malformed, 0);
    assert!(summary.metrics.filtered > 0);
    s.shutdown().await;
}
