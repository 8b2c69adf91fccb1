//! `connector = 'jetstream'`: reads a Jetstream endpoint directly as a stream of post rows.
//!
//! ```sql
//! CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
//! WITH (connector = 'jetstream', url = 'wss://jetstream2.us-east.bsky.network/subscribe');
//! ```
//!
//! Options: `url` (required), `collections` (comma-separated, default `app.bsky.feed.post`),
//! `dids` (comma-separated), `cursor` (Unix µs to start from; default live), `compress`
//! (default true), `batch_size` (default 1024), `linger` (longest wait before a partial batch
//! is sent, default 200ms), `max_attempts` (consecutive failed connections before the source
//! fails; default: retry forever). Its position is the Jetstream cursor.

use std::time::Duration;

use arrow::datatypes::SchemaRef;
use futures::FutureExt;
use futures::future::BoxFuture;
use skystream_engine::address::parse_url;
use skystream_engine::connector::{Connector, Resource, TableDef};
use skystream_engine::format::{RecordDecoder, push_record};
use skystream_engine::source::{Source, SourceContext, SourceEvent};
use skystream_engine::{Error, Result};

use crate::client::{Client, ClientConfig, Cursor};
use crate::format::{jetstream_decoder, resolve_schema};

pub struct JetstreamConnector;

struct Config {
    client: ClientConfig,
    batch_size: usize,
    linger: Duration,
}

fn list(s: Option<String>) -> Option<Vec<String>> {
    s.map(|s| {
        s.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    })
}

fn config(table: &TableDef) -> Result<Config> {
    let mut o = table.options();
    let url = o.take_required("url")?;
    parse_url("url", &url, &["ws", "wss"])
        .map_err(|e| Error::plan(format!("table '{}': {e}", table.name)))?;
    let mut c = ClientConfig::new(url);
    if let Some(cols) = list(o.take("collections")) {
        c.wanted_collections = cols;
    }
    c.wanted_dids = list(o.take("dids")).unwrap_or_default();
    c.cursor = o.take_parsed::<i64>("cursor")?;
    c.compress = o.take_bool("compress")?.unwrap_or(true);
    c.max_attempts = o.take_parsed::<u32>("max_attempts")?;
    let batch_size = o.take_batch_size(1024)?;
    let linger = o
        .take_duration("linger")?
        .unwrap_or(Duration::from_millis(200));
    o.finish()?;
    c.validate()
        .map_err(|e| Error::plan(format!("table '{}': {e}", table.name)))?;
    Ok(Config {
        client: c,
        batch_size,
        linger,
    })
}

impl Connector for JetstreamConnector {
    fn name(&self) -> &str {
        "jetstream"
    }

    fn resources(&self, table: &TableDef) -> Vec<Resource> {
        let url = table.options.get("url").unwrap_or_default();
        Resource::hosts(parse_url("url", url, &["ws", "wss"]).map(|e| vec![e])).collect()
    }

    fn description(&self) -> &str {
        "source: a Jetstream v1 endpoint (posts), with reconnects and cursor positions"
    }

    fn is_source(&self) -> bool {
        true
    }

    fn source_schema(&self, table: &TableDef) -> Result<SchemaRef> {
        config(table)?;
        resolve_schema(&table.name, "jetstream", table.declared_schema.as_ref())
    }

    fn create_source(&self, table: &TableDef, projection: &[usize]) -> Result<Box<dyn Source>> {
        let c = config(table)?;
        let decoder = jetstream_decoder(table, projection)?;
        Ok(Box::new(JetstreamSource {
            name: table.name.clone(),
            config: c,
            decoder,
        }))
    }
}

struct JetstreamSource {
    name: String,
    config: Config,
    decoder: Box<dyn RecordDecoder>,
}

impl Source for JetstreamSource {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema()
    }

    fn event_time_is_wall_clock(&self) -> bool {
        true
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<()>> {
        async move {
            let mut client = Client::new(self.config.client.clone())
                .map_err(|e| Error::connector(&self.name, e))?;
            if let Some(p) = &ctx.restore {
                let cursor: Cursor = serde_json::from_value(p.clone()).map_err(|e| {
                    Error::connector(&self.name, format!("bad restored position: {e}"))
                })?;
                client.resume(&cursor);
            }
            let (mut logged, mut n) = (0u32, 0u64);
            let mut deadline: Option<tokio::time::Instant> = None;
            loop {
                let next = match deadline {
                    Some(d) => tokio::time::timeout_at(d, client.next()).await.ok(),
                    None => Some(client.next().await),
                };
                if let Some(event) = next {
                    let event = event.map_err(|e| Error::connector(&self.name, e))?;
                    n += 1;
                    push_record(
                        self.decoder.as_mut(),
                        &ctx,
                        &self.name,
                        n,
                        &event.json,
                        &mut logged,
                    );
                    if deadline.is_none() && !self.decoder.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + self.config.linger);
                    }
                    if self.decoder.len() < self.config.batch_size {
                        continue;
                    }
                }
                deadline = None;
                if let Some(batch) = self.decoder.flush()? {
                    let position = client.cursor().and_then(|c| serde_json::to_value(c).ok());
                    let event = SourceEvent::Batch {
                        batch,
                        split: 0,
                        position,
                    };
                    if ctx.send(event).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        .boxed()
    }
}
