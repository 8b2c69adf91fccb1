//! Prometheus for real: Debian's `prometheus` scrapes a running `skystream serve` (a pipeline
//! with checkpoints) and a running `skystream ingest` (recorded Jetstream traffic into Kafka)
//! the way deploy/prometheus/prometheus.yml configures it, and its HTTP API must show the key
//! series — then every expression of the provisioned Grafana dashboard is evaluated by it.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skystream_api::{ApiConfig, ManagerConfig, Sandbox, Server};
use skystream_jetstream::server::{EventLog, Server as Jetstream, ServerConfig};
use skystream_tests::serve::Killed;
use skystream_tests::services::{kafka, unique_topic};
use skystream_tests::{repo_root, skystream_bin};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn query(c: &reqwest::Client, prom: &str, expr: &str) -> Value {
    let r = c
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_serve_and_ingest() {
    let tmp = std::env::temp_dir().join(unique_topic("prometheus"));
    std::fs::create_dir_all(&tmp).unwrap();

    // skystream serve (in-process) with a checkpointing pipeline.
    let cfg = ApiConfig {
        manager: ManagerConfig {
            data_dir: tmp.join("data"),
            max_pipelines: 4,
            idle_timeout: Duration::from_secs(5),
            sandbox: Sandbox::open(),
            memory_limit: Some(256 << 20),
            ..Default::default()
        },
        token: None,
        body_limit: 64 << 10,
        trends_redis: None,
        ..Default::default()
    };
    let server = Server::start("127.0.0.1:0", cfg, skystream_registry::registry())
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let query_sql =
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
        WITH (connector = 'synthetic', rate = '20', speed = '120', duration = '10h', seed = '4');
        CREATE TABLE out WITH (connector = 'memory');
        INSERT INTO out SELECT win['end'] AS window_end, keyword, n FROM (
            SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
            FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
            GROUP BY keyword, win)";
    let r = c
        .post(format!("http://{}/api/v1/pipelines", server.addr))
        .json(&json!({"name": "counts", "query": query_sql, "checkpoint_interval": 0.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    // skystream ingest (the binary): recorded Jetstream traffic, paced, into Kafka.
    let data = std::fs::read(repo_root().join("testdata/jetstream/expected_v1.jsonl")).unwrap();
    let js = Jetstream::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(EventLog::from_jsonl(&data)),
        ServerConfig {
            rate: Some(10.0),
            drop_after: None,
        },
    )
    .await
    .unwrap();
    let ingest_port = free_port();
    let _ingest = Killed(
        Command::new(skystream_bin())
            .args([
                "ingest",
                "--jetstream",
                &js.url(),
                "--bootstrap-servers",
                &kafka(),
            ])
            .args(["--topic", &unique_topic("prom-posts")])
            .arg("--cursor-file")
            .arg(tmp.join("cursor.json"))
            .args(["--metrics", &format!("127.0.0.1:{ingest_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Prometheus with the shipped configuration's jobs, pointed at these two.
    let shipped =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/prometheus.yml")).unwrap();
    let config = shipped
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("skystream:8080", &server.addr.to_string())
        .replace("ingest:9464", &format!("127.0.0.1:{ingest_port}"));
    assert_ne!(config, shipped);
    std::fs::write(tmp.join("prometheus.yml"), config).unwrap();
    let prom_port = free_port();
    let prometheus = std::env::var("SKYSTREAM_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let _prom = Killed(
        Command::new(&prometheus)
            .arg(format!(
                "--config.file={}",
                tmp.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{prometheus} (Debian prometheus): {e}")),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");

    // The key series, scraped.
    let key = [
        "up{job=\"skystream\"} == 1",
        "up{job=\"skystream-ingest\"} == 1",
        "skystream_pipelines{state=\"running\"} == 1",
        "skystream_pipeline_rows_in_total{name=\"counts\"} > 0",
        "skystream_pipeline_rows_out_total{name=\"counts\"} > 0",
        "skystream_pipeline_watermark_seconds{name=\"counts\"}",
        "skystream_pipeline_late_rows_total{name=\"counts\"}",
        "skystream_pipeline_checkpoints_total{name=\"counts\"} > 0",
        "skystream_pipeline_last_checkpoint_duration_seconds{name=\"counts\"}",
        "skystream_pipeline_sink_retries_total{name=\"counts\"}",
        "skystream_operator_rows_total",
        "skystream_ingest_events_received_total > 0",
        "skystream_ingest_events_produced_total > 0",
        "rate(skystream_pipeline_rows_in_total[10s]) > 0",
    ];
    let until = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<&str> = key.to_vec();
    while !missing.is_empty() {
        let mut still = vec![];
        for e in missing {
            let r = tokio::time::timeout(Duration::from_secs(5), async {
                c.get(format!("{prom}/api/v1/query"))
                    .query(&[("query", e)])
                    .send()
                    .await
                    .ok()?
                    .json::<Value>()
                    .await
                    .ok()
            })
            .await
            .ok()
            .flatten();
            let found = r.is_some_and(|v| {
                v["data"]["result"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            });
            if !found {
                still.push(e);
            }
        }
        missing = still;
        if !missing.is_empty() {
            assert!(
                Instant::now() < until,
                "not scraped after 90 s: {missing:?}"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    // The Grafana dashboard's expressions are valid PromQL over these series; the pipeline and
    // ingest rates it plots have data.
    let text =
        std::fs::read_to_string(repo_root().join("deploy/grafana/dashboards/skystream.json"))
            .unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut with_data = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            if !query(&c, &prom, expr).await.as_array().unwrap().is_empty() {
                with_data += 1;
            }
        }
    }
    for expr in [
        "sum by (name) (rate(skystream_pipeline_rows_in_total[1m]))",
        "time() - skystream_pipeline_watermark_seconds",
        "skystream_pipeline_last_checkpoint_duration_seconds",
        "rate(skystream_ingest_events_produced_total[1m])",
    ] {
        assert!(
            !query(&c, &prom, expr).await.as_array().unwrap().is_empty(),
            "{expr}: no data"
        );
    }
    assert!(with_data >= 8, "{with_data} dashboard series with data");

    server.stop().await.unwrap();
    js.shutdown().await;
    let _ = std::fs::remove_dir_all(&tmp);
}
