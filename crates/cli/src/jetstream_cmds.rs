//! `skystream jetstream-serve` and `skystream ingest`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use skystream_jetstream::client::ClientConfig;
use skystream_jetstream::server::{EventLog, Server, ServerConfig};
use skystream_kafka::ingest::{IngestConfig, IngestStats};

#[derive(Args)]
pub struct ServeArgs {
    /// JSONL file of Jetstream events (recorded or synthetic).
    #[arg(long)]
    file: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:6008")]
    listen: SocketAddr,
    /// Events per second per connection (0: as fast as the client reads).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Fault injection: drop every connection abruptly after this many events.
    #[arg(long)]
    drop_after: Option<u64>,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let data = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let log = EventLog::from_jsonl(&data);
    if log.is_empty() {
        bail!("{} holds no Jetstream events", args.file.display());
    }
    let rt = crate::runtime()?;
    rt.block_on(async move {
        let n = log.len();
        let skipped = log.skipped;
        let config = ServerConfig {
            rate: (args.rate > 0.0).then_some(args.rate),
            drop_after: args.drop_after,
        };
        let server = Server::start(args.listen, Arc::new(log), config)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        eprintln!(
            "serving {n} events ({skipped} lines skipped) on {} ; Ctrl-C to stop",
            server.url()
        );
        // Tests read this line to learn the port when --listen ends in :0.
        println!("{}", server.url());
        tokio::signal::ctrl_c().await?;
        server.shutdown().await;
        Ok(())
    })
}

#[derive(Args)]
pub struct IngestArgs {
    /// Jetstream subscribe URL (the local server: ws://127.0.0.1:6008/subscribe).
    #[arg(
        long,
        default_value = "wss://jetstream2.us-east.bsky.network/subscribe"
    )]
    jetstream: String,
    /// Collections to subscribe to (repeatable; NSIDs or prefixes like app.bsky.*).
    #[arg(long = "collection", default_value = "app.bsky.feed.post")]
    collections: Vec<String>,
    /// Only events of these DIDs (repeatable).
    #[arg(long = "did")]
    dids: Vec<String>,
    /// Start at this Jetstream cursor (Unix µs) when no cursor file exists.
    #[arg(long)]
    cursor: Option<i64>,
    /// Ask Jetstream for zstd-compressed frames.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    compress: bool,
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap_servers: String,
    #[arg(long, default_value = "bluesky.posts")]
    topic: String,
    /// librdkafka producer setting (repeatable): --kafka compression.type=zstd
    #[arg(long = "kafka", value_name = "KEY=VALUE")]
    kafka: Vec<String>,
    /// Where the acknowledged cursor is kept; a restart resumes after it.
    #[arg(long, default_value = "skystream-ingest.cursor.json")]
    cursor_file: PathBuf,
    /// Serve Prometheus metrics on this address (/metrics).
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics: Option<SocketAddr>,
    /// Stop after this many events.
    #[arg(long)]
    max_events: Option<u64>,
    /// Stop when no event arrived for this many seconds (for finite replays).
    #[arg(long)]
    idle_exit: Option<f64>,
    /// Consecutive failed connection attempts before giving up (default: never).
    #[arg(long)]
    max_attempts: Option<u32>,
}

pub fn ingest(args: IngestArgs) -> Result<()> {
    let mut js = ClientConfig::new(args.jetstream);
    js.wanted_collections = args.collections;
    js.wanted_dids = args.dids;
    js.cursor = args.cursor;
    js.compress = args.compress;
    js.max_attempts = args.max_attempts;
    js.validate().map_err(anyhow::Error::msg)?;
    let kafka = args
        .kafka
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--kafka expects KEY=VALUE, got '{kv}'"))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = IngestConfig {
        jetstream: js,
        bootstrap_servers: args.bootstrap_servers,
        topic: args.topic,
        kafka,
        cursor_file: Some(args.cursor_file),
        max_events: args.max_events,
        idle_exit: args.idle_exit.map(Duration::from_secs_f64),
        cursor_interval: Duration::from_secs(1),
    };
    let rt = crate::runtime()?;
    rt.block_on(async move {
        let stats = Arc::new(IngestStats::default());
        if let Some(addr) = args.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            eprintln!("metrics on http://{}/metrics", listener.local_addr()?);
            let s = stats.clone();
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let s = s.clone();
                    async move {
                        (
                            [("content-type", "text/plain; version=0.0.4")],
                            s.prometheus(),
                        )
                    }
                }),
            );
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("metrics server: {e}");
                }
            });
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping: waiting for Kafka's acknowledgements...");
                let _ = stop_tx.send(true);
            }
        });
        let progress = {
            let s = stats.clone();
            tokio::spawn(async move {
                let mut last = 0;
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    let p = s.produced.load(std::sync::atomic::Ordering::Relaxed);
                    eprintln!(
                        "[ingest] {} events/s produced | {} in flight | lag {:.1}s",
                        (p - last) / 5,
                        s.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                        s.lag_us.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6
                    );
                    last = p;
                }
            })
        };
        let started = std::time::Instant::now();
        let r = skystream_kafka::ingest::run(config, stats.clone(), stop_rx).await;
        progress.abort();
        let summary = r.map_err(anyhow::Error::msg)?;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "ingest done: {} events received, {} produced ({:.0}/s), cursor {}",
            summary.received,
            summary.produced,
            summary.produced as f64 / secs,
            summary
                .cursor
                .map(|c| c.time_us.to_string())
                .unwrap_or_else(|| "-".into())
        );
        Ok(())
    })
}
