//! `connector = 'redis'`: a sink writing windowed results to Redis, in one of three layouts.
//!
//! ```sql
//! CREATE TABLE trending WITH (connector = 'redis', layout = 'ranking', key = 'trending',
//!     window = 'window_end', member = 'keyword', score = 'score', ttl = '1h');
//! ```
//!
//! - `layout = 'ranking'`: one sorted set per window, `{key}:{window}` (window = the `window`
//!   column as Unix milliseconds), member = `member` column, score = `score` column; and
//!   `{key}:latest` = the newest window written (milliseconds), so a reader gets the current
//!   top-N with `GET` + `ZREVRANGE`. A window's set is replaced as a whole (DEL + ZADD in one
//!   MULTI), so writing a window twice leaves the same state.
//! - `layout = 'hash'`: one hash per row, `{key}:{v1}:{v2}...` from the `key_columns`, every
//!   column a field (text), replaced as a whole; `ttl` applies.
//! - `layout = 'publish'`: each row as a JSON message on channel `channel` (PUBLISH); a
//!   subscriber sees rows live (not idempotent: a replay publishes again).
//!
//! Options: `url` (default `redis://127.0.0.1:6379`), `username`, `password`, `layout` (required), `key` (key prefix,
//! default the table name), `ttl` (e.g. `1h`; none by default). Writes are pipelined, one
//! MULTI/EXEC per batch. When Redis is unreachable the sink retries with backoff (up to 5 s
//! between tries) and the pipeline waits — nothing is dropped — logging each failure.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use futures::FutureExt;
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use skystream_engine::connector::{Connector, Resource, TableDef};
use skystream_engine::sink::{Sink, SinkStatus};
use skystream_engine::{Error, Result};

/// The connector.
pub struct RedisConnector;

/// Where the sink writes without a `url` option.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Clone)]
enum Layout {
    Ranking {
        window: usize,
        member: usize,
        score: usize,
    },
    Hash {
        key_columns: Vec<usize>,
    },
    Publish {
        channel: String,
    },
}

#[derive(Debug, Clone)]
struct Config {
    /// The URL as parsed by the redis client, with the `username`/`password` options applied.
    connection: redis::ConnectionInfo,
    prefix: String,
    ttl: Option<Duration>,
    layout: Layout,
}

fn config(table: &TableDef, schema: &SchemaRef) -> Result<Config> {
    let mut o = table.options();
    let url = o.take("url").unwrap_or_else(|| DEFAULT_URL.into());
    let mut connection: redis::ConnectionInfo = url
        .parse()
        .map_err(|e| Error::plan(format!("table '{}': bad Redis url: {e}", table.name)))?;
    if let Some(u) = o.take("username") {
        connection.redis.username = Some(u);
    }
    if let Some(p) = o.take("password") {
        connection.redis.password = Some(p);
    }
    let prefix = o.take("key").unwrap_or_else(|| table.name.clone());
    let ttl = o.take_duration("ttl")?;
    let layout = match o
        .take_choice("layout", &["ranking", "hash", "publish"])?
        .as_deref()
    {
        Some("ranking") => {
            let w = o.take_required("window")?;
            let m = o.take_required("member")?;
            let s = o.take_required("score")?;
            let layout = Layout::Ranking {
                window: table.sink_column(schema, "window", &w)?,
                member: table.sink_column(schema, "member", &m)?,
                score: table.sink_column(schema, "score", &s)?,
            };
            if let Layout::Ranking { window, score, .. } = &layout {
                if !matches!(schema.field(*window).data_type(), DataType::Timestamp(_, _)) {
                    return Err(Error::plan(format!(
                        "table '{}': window column '{w}' must be a TIMESTAMP",
                        table.name
                    )));
                }
                if !schema.field(*score).data_type().is_numeric() {
                    return Err(Error::plan(format!(
                        "table '{}': score column '{s}' must be numeric",
                        table.name
                    )));
                }
            }
            layout
        }
        Some("hash") => {
            let cols = o.take_required("key_columns")?;
            Layout::Hash {
                key_columns: cols
                    .split(',')
                    .map(|c| table.sink_column(schema, "key_columns", c.trim()))
                    .collect::<Result<_>>()?,
            }
        }
        Some(_) => Layout::Publish {
            channel: o.take("channel").unwrap_or_else(|| table.name.clone()),
        },
        None => {
            return Err(Error::plan(format!(
                "table '{}': option 'layout' is required ('ranking', 'hash' or 'publish')",
                table.name
            )));
        }
    };
    o.finish()?;
    Ok(Config {
        connection,
        prefix,
        ttl,
        layout,
    })
}

impl Connector for RedisConnector {
    fn name(&self) -> &str {
        "redis"
    }

    fn resources(&self, table: &TableDef) -> Vec<Resource> {
        // Read with the redis client's own parser: the host it reports is the host it reaches.
        let url = table.options.get("url").unwrap_or(DEFAULT_URL);
        match url.parse::<redis::ConnectionInfo>() {
            Err(e) => vec![Resource::Invalid(format!("bad Redis url '{url}': {e}"))],
            Ok(info) => {
                let mut r = vec![match info.addr {
                    redis::ConnectionAddr::Tcp(host, _)
                    | redis::ConnectionAddr::TcpTls { host, .. } => {
                        Resource::Host(host.trim_matches(['[', ']']).to_ascii_lowercase())
                    }
                    redis::ConnectionAddr::Unix(path) => {
                        Resource::LocalSocket(path.display().to_string())
                    }
                }];
                if info.redis.username.is_some() || info.redis.password.is_some() {
                    r.push(Resource::UrlCredentials(
                        "use the 'username' and 'password' options".into(),
                    ));
                }
                r
            }
        }
    }

    fn description(&self) -> &str {
        "sink: Redis sorted sets per window (+ latest pointer), hashes per row, or pub/sub"
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn validate_sink(&self, table: &TableDef, schema: &SchemaRef) -> Result<()> {
        config(table, schema).map(|_| ())
    }

    fn create_sink(&self, table: &TableDef, schema: SchemaRef) -> Result<Box<dyn Sink>> {
        let config = config(table, &schema)?;
        Ok(Box::new(RedisSink {
            name: table.name.clone(),
            config,
            conn: None,
            stats: Arc::default(),
        }))
    }
}

struct RedisSink {
    name: String,
    config: Config,
    conn: Option<MultiplexedConnection>,
    stats: Arc<SinkStatus>,
}

/// Text of every cell of column `c` (NULL as empty).
fn texts(batch: &RecordBatch, c: usize) -> Result<Vec<String>> {
    let col = batch.column(c);
    let s = match col.data_type() {
        DataType::Utf8 => col.clone(),
        _ => cast(col, &DataType::Utf8)?,
    };
    let s = s.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| {
            if s.is_null(i) {
                String::new()
            } else {
                s.value(i).to_string()
            }
        })
        .collect())
}

fn millis(batch: &RecordBatch, c: usize) -> Result<Vec<Option<i64>>> {
    let ms = cast(
        batch.column(c),
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    let ms = ms.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
    Ok((0..ms.len())
        .map(|i| ms.is_valid(i).then(|| ms.value(i)))
        .collect())
}

fn floats(batch: &RecordBatch, c: usize) -> Result<Vec<Option<f64>>> {
    let f = cast(batch.column(c), &DataType::Float64)?;
    let f = f.as_primitive::<arrow::datatypes::Float64Type>();
    Ok((0..f.len())
        .map(|i| f.is_valid(i).then(|| f.value(i)))
        .collect())
}

const SET_IF_NEWER: &str = r"
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1";

impl RedisSink {
    /// The commands writing `batch`, as one atomic pipeline.
    fn pipeline(&self, batch: &RecordBatch) -> Result<redis::Pipeline> {
        let mut p = redis::pipe();
        p.atomic();
        let ttl = self.config.ttl.map(|d| d.as_secs().max(1) as i64);
        let prefix = &self.config.prefix;
        match &self.config.layout {
            Layout::Ranking {
                window,
                member,
                score,
            } => {
                let (w, m, s) = (
                    millis(batch, *window)?,
                    texts(batch, *member)?,
                    floats(batch, *score)?,
                );
                // Rows grouped by window: each window's set is replaced whole.
                let mut windows: std::collections::BTreeMap<i64, Vec<(f64, &str)>> =
                    Default::default();
                for i in 0..batch.num_rows() {
                    if let (Some(w), Some(s)) = (w[i], s[i]) {
                        windows.entry(w).or_default().push((s, m[i].as_str()));
                    }
                }
                for (w, members) in &windows {
                    let key = format!("{prefix}:{w}");
                    p.del(&key).ignore();
                    p.zadd_multiple(&key, members).ignore();
                    if let Some(t) = ttl {
                        p.expire(&key, t).ignore();
                    }
                }
                if let Some(newest) = windows.keys().next_back() {
                    p.cmd("EVAL")
                        .arg(SET_IF_NEWER)
                        .arg(1)
                        .arg(format!("{prefix}:latest"))
                        .arg(newest)
                        .ignore();
                    if let Some(t) = ttl {
                        p.expire(format!("{prefix}:latest"), t).ignore();
                    }
                }
            }
            Layout::Hash { key_columns } => {
                let schema = batch.schema();
                let cols: Vec<Vec<String>> = (0..batch.num_columns())
                    .map(|c| texts(batch, c))
                    .collect::<Result<_>>()?;
                for i in 0..batch.num_rows() {
                    let mut key = prefix.clone();
                    for &k in key_columns {
                        key.push(':');
                        key.push_str(&cols[k][i]);
                    }
                    let fields: Vec<(&str, &str)> = schema
                        .fields()
                        .iter()
                        .zip(&cols)
                        .map(|(f, v)| (f.name().as_str(), v[i].as_str()))
                        .collect();
                    p.del(&key).ignore();
                    p.hset_multiple(&key, &fields).ignore();
                    if let Some(t) = ttl {
                        p.expire(&key, t).ignore();
                    }
                }
            }
            Layout::Publish { channel } => {
                let mut buf = Vec::new();
                {
                    let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                    w.write(batch)?;
                    w.finish()?;
                }
                for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    p.publish(channel, line).ignore();
                }
            }
        }
        Ok(p)
    }
}

impl Sink for RedisSink {
    fn status(&self) -> Option<Arc<SinkStatus>> {
        Some(self.stats.clone())
    }

    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        async move {
            if batch.num_rows() == 0 {
                return Ok(());
            }
            let pipe = self.pipeline(&batch)?;
            let mut delay = Duration::from_millis(100);
            loop {
                let attempt = async {
                    if self.conn.is_none() {
                        let client = redis::Client::open(self.config.connection.clone())?;
                        self.conn = Some(client.get_multiplexed_async_connection().await?);
                    }
                    let conn = self.conn.as_mut().expect("connected above");
                    pipe.query_async::<()>(conn).await
                };
                let result = match tokio::time::timeout(Duration::from_secs(10), attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer from Redis in 10 s",
                    ))),
                };
                match result {
                    Ok(()) => {
                        if self.stats.degraded.swap(false, Ordering::Relaxed) {
                            tracing::info!(sink = %self.name, "Redis writes succeed again");
                        }
                        return Ok(());
                    }
                    Err(e) => {
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        self.stats.degraded.store(true, Ordering::Relaxed);
                        if e.is_connection_dropped()
                            || e.is_io_error()
                            || e.is_timeout()
                            || e.is_connection_refusal()
                        {
                            self.conn = None;
                        } else {
                            // A command error (wrong key type, ...) will not heal by retrying.
                            return Err(Error::connector(&self.name, format!("redis: {e}")));
                        }
                        tracing::warn!(sink = %self.name, "Redis write failed ({e}); retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        .boxed()
    }
}
