//! `skystream bench-kafka`: ingest throughput (local Jetstream server → `ingest` → Kafka, in
//! events/s) and the Kafka → SQL pipeline (posts/s through the `top20` query of `bench`), against
//! a running broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use skystream_jetstream::client::ClientConfig;
use skystream_jetstream::server::{EventLog, Server, ServerConfig};
use skystream_kafka::ingest::{IngestConfig, IngestStats};
use skystream_synthetic::{Generator, GeneratorConfig};

#[derive(clap::Args)]
pub struct BenchKafkaArgs {
    /// Synthetic posts to send (other events come on top, see --other-events).
    #[arg(long, default_value_t = 200_000)]
    posts: u64,
    /// Non-post events per post (likes, follows): the ingest subscribes to every collection.
    #[arg(long, default_value_t = 1.0)]
    other_events: f64,
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    /// Partitions of the benchmark's topic (created fresh for each run).
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// Ask the local server for zstd-compressed frames.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    compress: bool,
}

pub fn run(args: BenchKafkaArgs) -> Result<()> {
    let rt = crate::runtime()?;
    rt.block_on(async move {
        eprintln!("generating {} posts...", args.posts);
        let mut g = Generator::new(GeneratorConfig {
            seed: 42,
            rate: 35.0,
            count: Some(args.posts),
            other_events: args.other_events,
            ..Default::default()
        })
        .map_err(anyhow::Error::msg)?;
        let mut data = Vec::new();
        let mut buf = Vec::new();
        while g.next_event(&mut buf).is_some() {
            data.extend_from_slice(&buf);
            data.push(b'\n');
        }
        let log = EventLog::from_jsonl(&data);
        let events = log.len();
        drop(data);
        let server = Server::start(
            "127.0.0.1:0".parse()?,
            Arc::new(log),
            ServerConfig::default(),
        )
        .await?;
        let topic = format!(
            "skystream-bench-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis()
        );
        create_topic(&args.bootstrap_servers, &topic, args.partitions).await?;

        let mut js = ClientConfig::new(server.url());
        js.wanted_collections.clear();
        js.compress = args.compress;
        let cursor = std::env::temp_dir().join(format!("{topic}.cursor.json"));
        let config = IngestConfig {
            jetstream: js,
            bootstrap_servers: args.bootstrap_servers.clone(),
            topic: topic.clone(),
            kafka: vec![],
            cursor_file: Some(cursor.clone()),
            max_events: Some(events as u64),
            idle_exit: Some(Duration::from_secs(5)),
            cursor_interval: Duration::from_secs(1),
        };
        let (_stop, rx) = tokio::sync::watch::channel(false);
        let t = Instant::now();
        let summary = skystream_kafka::ingest::run(config, Arc::new(IngestStats::default()), rx)
            .await
            .map_err(anyhow::Error::msg)?;
        let ingest_secs = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&cursor);
        server.shutdown().await;
        if summary.produced as usize != events {
            bail!("ingest stored {} of {events} events", summary.produced);
        }

        let sql = format!(
            "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
             WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{topic}',
                   format = 'jetstream', bounded = 'latest');
             CREATE TABLE top WITH (connector = 'memory');
             {}",
            args.bootstrap_servers,
            crate::bench::TOP20_INSERT
        );
        let reg = skystream_registry::registry();
        let planned = skystream_sql::plan_script(&sql, &reg)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = Instant::now();
        let run = planned.pipeline.run().await?;
        let sql_secs = t.elapsed().as_secs_f64();
        let m = run.metrics;
        println!("events:             {events} ({} posts)", args.posts);
        println!(
            "ingest:             {:.0} events/s (local Jetstream server{} -> Kafka, {} partitions, acknowledged)",
            events as f64 / ingest_secs,
            if args.compress { ", zstd frames" } else { "" },
            args.partitions
        );
        println!(
            "kafka -> SQL top20: {:.0} posts/s ({} rows in, {} filtered, {} windows, {} late)",
            m.rows_in as f64 / sql_secs,
            m.rows_in,
            m.filtered,
            m.windows_emitted,
            m.late_rows
        );
        Ok(())
    })
}

async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .context("kafka admin client")?;
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("cannot create topic {topic} on {bootstrap}"))?;
    for x in r {
        x.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}
