//! `connector = 'replay'`: reads a JSONL file (Jetstream v1 events or plain JSON rows) as a
//! stream, as fast as possible, in real time, or N times faster.
//!
//! ```sql
//! CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
//! WITH (connector = 'replay', path = 'testdata/jetstream/expected_v1.jsonl',
//!       format = 'jetstream', speed = 'max');
//! ```
//!
//! Options: `path` (required), `format` (`jetstream` | `json`, default `jetstream`), `speed`
//! (`max`, `realtime`, or a factor such as `60`), `time_field` (for paced `json`: the
//! timestamp column to pace on; default: the first timestamp column), `batch_size`
//! (default 4096). Its position is the number of lines consumed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use futures::FutureExt;
use futures::future::BoxFuture;
use skystream_engine::connector::{Connector, Resource, TableDef};
use skystream_engine::format::RecordDecoder;
pub use skystream_engine::format::push_record;
use skystream_engine::source::{Source, SourceContext, SourceEvent, Stopped};
use skystream_engine::{Error, Result};
use skystream_jetstream::format::{FORMATS, decoder_for, resolve_schema};

/// How fast a recorded stream is replayed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// No pacing.
    Max,
    /// Event time runs this many times faster than the wall clock (1 = real time).
    Factor(f64),
}

impl Speed {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "max" | "fast" | "asap" => Ok(Speed::Max),
            "realtime" | "real-time" | "1" | "1x" | "x1" => Ok(Speed::Factor(1.0)),
            other => {
                let n = other.trim_start_matches('x').trim_end_matches('x');
                match n.parse::<f64>() {
                    Ok(f) if f > 0.0 && f.is_finite() => Ok(Speed::Factor(f)),
                    _ => Err(Error::plan(format!(
                        "speed must be 'max', 'realtime' or a factor such as '60', got '{s}'"
                    ))),
                }
            }
        }
    }
}

/// Paces event time against the wall clock.
#[derive(Debug)]
pub struct Pacer {
    speed: Speed,
    origin: Option<(i64, Instant)>,
    /// Event time released unpaced from the first event on (a baseline filled at once).
    fast_forward_ns: i64,
    first_ns: Option<i64>,
}

impl Pacer {
    pub fn new(speed: Speed) -> Self {
        Self::with_fast_forward(speed, Duration::ZERO)
    }

    /// Paces at `speed` once `fast_forward` of event time (from the first event) has gone out
    /// as fast as it can be read.
    pub fn with_fast_forward(speed: Speed, fast_forward: Duration) -> Self {
        Self {
            speed,
            origin: None,
            fast_forward_ns: fast_forward.as_nanos().min(i64::MAX as u128) as i64,
            first_ns: None,
        }
    }

    /// Whether an event at `event_ns` is released at the paced rate (not fast-forwarded).
    pub fn paces(&mut self, event_ns: i64) -> bool {
        let first = *self.first_ns.get_or_insert(event_ns);
        self.is_paced() && event_ns.saturating_sub(first) >= self.fast_forward_ns
    }

    /// How long to wait before releasing an event at `event_ns` (zero when it is due).
    pub fn delay(&mut self, event_ns: i64) -> Duration {
        if !self.paces(event_ns) {
            return Duration::ZERO;
        }
        let Speed::Factor(f) = self.speed else {
            return Duration::ZERO;
        };
        // The clock starts where fast-forwarding ended.
        let (t0, w0) = *self.origin.get_or_insert((event_ns, Instant::now()));
        let due = w0 + Duration::from_secs_f64(((event_ns - t0).max(0) as f64 / 1e9) / f);
        due.saturating_duration_since(Instant::now())
    }

    /// The event time the wall clock has reached (paced replays only).
    pub fn clock(&self) -> Option<i64> {
        match (self.speed, self.origin) {
            (Speed::Factor(f), Some((t0, w0))) => {
                Some(t0 + (w0.elapsed().as_secs_f64() * f * 1e9) as i64)
            }
            _ => None,
        }
    }

    pub fn is_paced(&self) -> bool {
        matches!(self.speed, Speed::Factor(_))
    }
}

/// The replay connector.
pub struct ReplayConnector;

struct Config {
    path: String,
    format: String,
    speed: Speed,
    batch_size: usize,
    time_field: Option<String>,
}

fn config(table: &TableDef) -> Result<Config> {
    let mut o = table.options();
    let path = o.take_required("path")?;
    let format = o
        .take_choice("format", FORMATS)?
        .unwrap_or_else(|| "jetstream".into());
    let speed = o
        .take("speed")
        .map(|s| Speed::parse(&s))
        .transpose()?
        .unwrap_or(Speed::Max);
    let batch_size = o.take_batch_size(4096)?;
    let time_field = o.take("time_field");
    o.finish()?;
    Ok(Config {
        path,
        format,
        speed,
        batch_size,
        time_field,
    })
}

impl Connector for ReplayConnector {
    fn name(&self) -> &str {
        "replay"
    }

    fn resources(&self, table: &TableDef) -> Vec<Resource> {
        vec![Resource::LocalPath(
            table.options.get("path").unwrap_or_default().to_string(),
        )]
    }

    fn description(&self) -> &str {
        "source: a JSONL file of Jetstream events or JSON rows, replayed at max speed, real time or xN"
    }

    fn is_source(&self) -> bool {
        true
    }

    fn source_schema(&self, table: &TableDef) -> Result<SchemaRef> {
        let c = config(table)?;
        if !std::path::Path::new(&c.path).exists() {
            return Err(Error::plan(format!(
                "table '{}': file '{}' does not exist",
                table.name, c.path
            )));
        }
        resolve_schema(&table.name, &c.format, table.declared_schema.as_ref())
    }

    fn create_source(&self, table: &TableDef, projection: &[usize]) -> Result<Box<dyn Source>> {
        let c = config(table)?;
        let schema = resolve_schema(&table.name, &c.format, table.declared_schema.as_ref())?;
        let decoder = decoder_for(&c.format, &schema, projection)?;
        let out_schema = decoder.schema();
        let time_col = match &c.time_field {
            Some(f) => Some(out_schema.index_of(f).map_err(|_| {
                Error::plan(format!(
                    "table '{}': time_field '{f}' is not a read column",
                    table.name
                ))
            })?),
            None => out_schema
                .fields()
                .iter()
                .position(|f| matches!(f.data_type(), DataType::Timestamp(_, _))),
        };
        Ok(Box::new(LinesSource {
            name: table.name.clone(),
            reader: LineReader::File(c.path),
            decoder,
            pacer: Pacer::new(c.speed),
            batch_size: c.batch_size,
            time_col,
        }))
    }
}

/// Where lines come from.
pub enum LineReader {
    File(String),
    /// Lines held in memory (benchmarks, tests).
    Memory(Arc<Vec<Vec<u8>>>),
}

/// A source decoding lines, batching them, and pacing them on event time.
pub struct LinesSource {
    pub name: String,
    pub reader: LineReader,
    pub decoder: Box<dyn RecordDecoder>,
    pub pacer: Pacer,
    pub batch_size: usize,
    /// Column of the decoded rows that paces a replay.
    pub time_col: Option<usize>,
}

impl LinesSource {
    /// A source over lines in memory, decoded with `decoder`, as fast as possible.
    pub fn in_memory(
        name: &str,
        lines: Arc<Vec<Vec<u8>>>,
        decoder: Box<dyn RecordDecoder>,
        batch_size: usize,
    ) -> Self {
        Self {
            name: name.into(),
            reader: LineReader::Memory(lines),
            decoder,
            pacer: Pacer::new(Speed::Max),
            batch_size,
            time_col: None,
        }
    }
}

fn first_time(batch: &RecordBatch, col: Option<usize>) -> Option<i64> {
    let c = batch.column(col?);
    let c = arrow::compute::cast(
        c,
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
    )
    .ok()?;
    let a = c.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
    (!a.is_empty() && a.is_valid(0)).then(|| a.value(0))
}

impl Source for LinesSource {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema()
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<()>> {
        async move {
            let skip = ctx
                .restore
                .as_ref()
                .and_then(|p| p.get("line"))
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            let mut line_no: u64 = 0;
            let mut logged = 0u32;
            // With pacing, rows are released in small batches so the clock stays smooth.
            let batch_size = if self.pacer.is_paced() {
                self.batch_size.min(64)
            } else {
                self.batch_size
            };
            enum Lines {
                File(ChunkLines),
                Memory(Arc<Vec<Vec<u8>>>, usize),
            }
            let mut lines = match &self.reader {
                LineReader::File(path) => {
                    let f = std::fs::File::open(path).map_err(|e| {
                        Error::connector(&self.name, format!("cannot open '{path}': {e}"))
                    })?;
                    Lines::File(ChunkLines::new(f))
                }
                LineReader::Memory(v) => Lines::Memory(v.clone(), 0),
            };
            let mut yielder = Yielder::default();
            loop {
                if yielder.tick(&ctx).await.is_err() {
                    return Ok(());
                }
                let shared;
                let next: Option<&[u8]> = match &mut lines {
                    Lines::File(it) => match it.next_line() {
                        Ok(Some((a, b))) => Some(&it.buf[a..b]),
                        Ok(None) => None,
                        Err(e) => return Err(Error::connector(&self.name, e)),
                    },
                    Lines::Memory(v, i) => {
                        shared = v.clone();
                        let line = shared.get(*i).map(|l| l.as_slice());
                        *i += 1;
                        line
                    }
                };
                let done = next.is_none();
                if let Some(line) = next {
                    line_no += 1;
                    if line_no > skip {
                        push_record(
                            self.decoder.as_mut(),
                            &ctx,
                            &self.name,
                            line_no,
                            line,
                            &mut logged,
                        );
                    }
                }
                if (self.decoder.len() >= batch_size || (done && !self.decoder.is_empty()))
                    && let Some(batch) = self.decoder.flush()?
                {
                    yielder.sent();
                    let t = first_time(&batch, self.time_col);
                    let position = serde_json::json!({ "line": line_no });
                    if send_paced(&ctx, &mut self.pacer, batch, t, position)
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                if done {
                    let _ = ctx.send(SourceEvent::End).await;
                    return Ok(());
                }
            }
        }
        .boxed()
    }
}

/// Lines of a file read in large chunks: each line is a slice of the chunk (no copy, no
/// allocation per line); a line crossing a chunk's end is moved to the front first.
struct ChunkLines {
    f: std::fs::File,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Inside a line longer than the buffer: its rest is dropped up to the next newline.
    skipping: bool,
}

impl ChunkLines {
    fn new(f: std::fs::File) -> Self {
        Self {
            f,
            buf: vec![0; 4 << 20],
            start: 0,
            end: 0,
            eof: false,
            skipping: false,
        }
    }

    /// The next line (without its `\n`) as a range of `buf`.
    fn next_line(&mut self) -> std::io::Result<Option<(usize, usize)>> {
        use std::io::Read;
        loop {
            if let Some(k) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let line = (self.start, self.start + k);
                self.start += k + 1;
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.skipping {
                self.start = self.end;
            }
            if self.eof {
                if self.start < self.end {
                    let line = (self.start, self.end);
                    self.start = self.end;
                    return Ok(Some(line));
                }
                return Ok(None);
            }
            // Keep the partial line, make room, read on.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                // A line longer than the buffer (4 MiB, past MAX_RECORD_BYTES): its first
                // 4 MiB go on as the record, to be counted as too large, and the rest is
                // dropped, so memory stays bounded whatever the file holds.
                self.skipping = true;
                self.start = self.end;
                return Ok(Some((0, self.end)));
            }
            let n = self.f.read(&mut self.buf[self.end..])?;
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }
}

/// The earliest event time in column `col` of `batch`.
pub fn min_time(batch: &RecordBatch, col: Option<usize>) -> Option<i64> {
    let c = batch.column(col?);
    let c = arrow::compute::cast(
        c,
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, None),
    )
    .ok()?;
    arrow::compute::min(c.as_primitive::<arrow::datatypes::TimestampNanosecondType>())
}

/// Lets the engine's task run during long stretches without a batch (skipping input on
/// resume, input that is all filtered): sources decode on the engine's thread.
#[derive(Default)]
pub struct Yielder {
    since: u32,
}

impl Yielder {
    /// Called once per input record: every 8192 without a batch sent, yields (and tells
    /// whether the engine stopped listening).
    pub async fn tick(&mut self, ctx: &SourceContext) -> Result<(), Stopped> {
        self.since += 1;
        if self.since == 8192 {
            self.since = 0;
            tokio::task::yield_now().await;
            if ctx.is_stopped() {
                return Err(Stopped);
            }
        }
        Ok(())
    }

    /// A batch was sent (sending waits, which lets other tasks run).
    pub fn sent(&mut self) {
        self.since = 0;
    }
}

/// Sends a batch whose first row is at `event_ns`, first waiting until the pacer releases it,
/// then lets other tasks run (sources decode on the engine's thread).
pub async fn send_paced(
    ctx: &SourceContext,
    pacer: &mut Pacer,
    batch: RecordBatch,
    event_ns: Option<i64>,
    position: serde_json::Value,
) -> Result<(), Stopped> {
    if let Some(t) = event_ns {
        let d = pacer.delay(t);
        if !d.is_zero() {
            // Heartbeats (in the watermark column's terms) never pass this batch's earliest row.
            let floor = min_time(&batch, ctx.event_time_column);
            sleep_with_heartbeats(ctx, pacer, d, floor).await;
        }
    }
    ctx.send(SourceEvent::Batch {
        batch,
        split: 0,
        position: Some(position),
    })
    .await?;
    tokio::task::yield_now().await;
    Ok(())
}

/// Sleeps `d`, telling the engine every 100 ms how far the paced event clock has moved, never
/// past `floor_ns`, the earliest event time of the batch waiting to be sent (no heartbeats
/// without one).
///
/// The cap makes heartbeats harmless to exactly-once: a heartbeat at most the waiting batch's
/// earliest event time moves the watermark no further than those rows themselves will, so which
/// rows are late does not depend on when the sleeps happened to wake up (an oversleep under
/// load, the pauses of a crash and a restart). Uncapped, a heartbeat taken after an oversleep
/// ran ahead of the waiting batch and made its slightly out-of-order rows late.
pub async fn sleep_with_heartbeats(
    ctx: &SourceContext,
    pacer: &Pacer,
    d: Duration,
    floor_ns: Option<i64>,
) {
    let until = Instant::now() + d;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        if let (Some(clock), Some(floor)) = (pacer.clock(), floor_ns)
            && ctx
                .send(SourceEvent::Heartbeat {
                    event_time_ns: clock.min(floor),
                })
                .await
                .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines come out whole across chunk ends; a line longer than the buffer comes out as its
    /// first 4 MiB (then skipped as too large) and its rest is dropped, without growing memory.
    #[test]
    fn chunked_lines_bound_memory() {
        let path =
            std::env::temp_dir().join(format!("skystream-lines-{}.jsonl", std::process::id()));
        let mut text = Vec::new();
        let short: Vec<Vec<u8>> = (0..200_000)
            .map(|i| format!("{{\"n\":{i}}}").into_bytes())
            .collect();
        for l in &short[..100_000] {
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        text.extend(std::iter::repeat_n(b'x', 9 << 20));
        text.push(b'\n');
        for l in &short[100_000..] {
            text.extend_from_slice(l);
            text.push(b'\n');
        }
        text.extend_from_slice(b"last");
        std::fs::write(&path, &text).unwrap();
        let mut lines = ChunkLines::new(std::fs::File::open(&path).unwrap());
        let mut got: Vec<Vec<u8>> = Vec::new();
        while let Some((a, b)) = lines.next_line().unwrap() {
            got.push(lines.buf[a..b].to_vec());
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(got.len(), 200_002);
        assert_eq!(&got[..100_000], &short[..100_000]);
        assert_eq!(got[100_000].len(), 4 << 20);
        assert!(got[100_000].len() > skystream_engine::format::MAX_RECORD_BYTES);
        assert_eq!(&got[100_001..200_001], &short[100_000..]);
        assert_eq!(got[200_001], b"last");
        assert_eq!(lines.buf.len(), 4 << 20, "the buffer never grew");
    }

    #[test]
    fn speeds() {
        assert_eq!(Speed::parse("max").unwrap(), Speed::Max);
        assert_eq!(Speed::parse("realtime").unwrap(), Speed::Factor(1.0));
        assert_eq!(Speed::parse("60").unwrap(), Speed::Factor(60.0));
        assert_eq!(Speed::parse("x10").unwrap(), Speed::Factor(10.0));
        assert!(Speed::parse("fast-ish").is_err());
        assert!(Speed::parse("-3").is_err());
    }

    #[test]
    fn pacer_waits_in_event_time_over_speed() {
        let mut p = Pacer::new(Speed::Factor(10.0));
        assert_eq!(p.delay(0), Duration::ZERO);
        let d = p.delay(10_000_000_000); // 10 s of event time at x10 = 1 s
        assert!(
            d > Duration::from_millis(900) && d <= Duration::from_secs(1),
            "{d:?}"
        );
        let mut m = Pacer::new(Speed::Max);
        assert_eq!(m.delay(1_000_000_000_000), Duration::ZERO);
    }

    #[test]
    fn fast_forward_releases_the_first_period_then_paces() {
        let min = 60_000_000_000i64;
        let mut p = Pacer::with_fast_forward(Speed::Factor(60.0), Duration::from_secs(3600));
        for m in 0..60 {
            assert_eq!(p.delay(1_000 + m * min), Duration::ZERO, "minute {m}");
            assert!(p.clock().is_none());
        }
        // The paced clock starts at the end of the fast-forward.
        assert_eq!(p.delay(1_000 + 60 * min), Duration::ZERO);
        assert!(p.clock().is_some());
        let d = p.delay(1_000 + 61 * min); // 1 min of event time at x60 = 1 s
        assert!(
            d > Duration::from_millis(900) && d <= Duration::from_secs(1),
            "{d:?}"
        );
    }
}
