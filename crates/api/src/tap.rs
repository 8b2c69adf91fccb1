//! A pipeline's result rows as the API sees them: every sink is wrapped in a [`TapSink`] that
//! passes batches on unchanged and also (1) broadcasts them as JSON to `/output` subscribers and
//! (2) keeps the newest windows of trend-shaped results (a window-end timestamp, a term and a
//! score) for `/trends` when no Redis is configured.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use futures::FutureExt;
use futures::future::BoxFuture;
use skystream_engine::Result;
use skystream_engine::sink::{Sink, SinkStart, SinkStatus};
use tokio::sync::{broadcast, watch};

/// Windows of trend rows kept per pipeline.
const KEEP_WINDOWS: usize = 60;

/// The ranked terms of one window.
#[derive(Debug, Clone)]
pub struct TrendWindow {
    pub table: String,
    pub terms: Vec<(String, f64)>,
}

/// What the API taps from one run of a pipeline (from the moment it is asked to start).
#[derive(Debug)]
pub struct Tap {
    /// Batches as `/output` event data: `{"table": ..., "rows": [{...}, ...]}`, rendered once
    /// for every subscriber.
    tx: broadcast::Sender<Arc<String>>,
    /// Set when the run has ended (or failed to start): no more rows will come.
    ended: watch::Sender<bool>,
    /// Window end (ms) -> ranked terms, newest windows only.
    trends: Mutex<BTreeMap<i64, TrendWindow>>,
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
            ended: watch::channel(false).0,
            trends: Mutex::default(),
        }
    }
}

impl Tap {
    /// A tap of no run: it has ended already.
    pub fn ended() -> Self {
        let t = Self::default();
        t.end();
        t
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<String>> {
        self.tx.subscribe()
    }

    /// A flag that turns true when the run has ended.
    pub fn watch_end(&self) -> watch::Receiver<bool> {
        self.ended.subscribe()
    }

    /// The run has ended: `/output` streams end after the rows already sent.
    pub fn end(&self) {
        self.ended.send_replace(true);
    }

    /// The window ending at `window` (ms), or the newest one.
    pub fn trends(&self, window: Option<i64>) -> Option<(i64, TrendWindow)> {
        let t = self.trends.lock().unwrap();
        match window {
            Some(w) => t.get(&w).map(|v| (w, v.clone())),
            None => t.iter().next_back().map(|(w, v)| (*w, v.clone())),
        }
    }

    fn record(&self, table: &str, cols: &TrendColumns, batch: &RecordBatch) -> Result<()> {
        let ms = cast(
            batch.column(cols.window),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let ms = ms.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let terms = cast(batch.column(cols.term), &DataType::Utf8)?;
        let terms = terms.as_string::<i32>();
        let scores = cast(batch.column(cols.score), &DataType::Float64)?;
        let scores = scores.as_primitive::<arrow::datatypes::Float64Type>();
        let mut fresh: BTreeMap<i64, Vec<(String, f64)>> = BTreeMap::new();
        for i in 0..batch.num_rows() {
            if ms.is_valid(i) && terms.is_valid(i) && scores.is_valid(i) {
                fresh
                    .entry(ms.value(i))
                    .or_default()
                    .push((terms.value(i).to_string(), scores.value(i)));
            }
        }
        let mut t = self.trends.lock().unwrap();
        for (w, mut terms) in fresh {
            terms.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            // A window's rows arrive in one batch: they replace what an earlier run wrote.
            t.insert(
                w,
                TrendWindow {
                    table: table.to_string(),
                    terms,
                },
            );
        }
        while t.len() > KEEP_WINDOWS {
            t.pop_first();
        }
        Ok(())
    }
}

/// Columns of a trend-shaped result.
#[derive(Debug, Clone, Copy)]
struct TrendColumns {
    window: usize,
    term: usize,
    score: usize,
}

fn trend_columns(schema: &SchemaRef) -> Option<TrendColumns> {
    let find = |names: &[&str], ok: &dyn Fn(&DataType) -> bool| {
        names.iter().find_map(|n| {
            schema
                .index_of(n)
                .ok()
                .filter(|&i| ok(schema.field(i).data_type()))
        })
    };
    Some(TrendColumns {
        window: find(&["window_end", "window"], &|t| {
            matches!(t, DataType::Timestamp(_, _))
        })?,
        term: find(&["keyword", "hashtag", "term", "member"], &|t| {
            matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        })?,
        score: find(&["score", "n", "count"], &DataType::is_numeric)?,
    })
}

/// Passes batches to `inner` and shows them to the pipeline's [`Tap`].
pub struct TapSink {
    table: String,
    inner: Box<dyn Sink>,
    tap: Arc<Tap>,
}

impl TapSink {
    pub fn new(table: String, inner: Box<dyn Sink>, tap: Arc<Tap>) -> Self {
        Self { table, inner, tap }
    }

    fn show(&self, batch: &RecordBatch) {
        if let Some(cols) = trend_columns(&batch.schema())
            && let Err(e) = self.tap.record(&self.table, &cols, batch)
        {
            tracing::debug!(table = %self.table, "trend rows not kept: {e}");
        }
        if self.tap.tx.receiver_count() == 0 || batch.num_rows() == 0 {
            return;
        }
        match event_data(&self.table, batch) {
            Ok(data) => {
                let _ = self.tap.tx.send(Arc::new(data));
            }
            Err(e) => tracing::debug!(table = %self.table, "rows not shown: {e}"),
        }
    }
}

/// `{"table": ..., "rows": [...]}` with the rows as Arrow's JSON writer renders them.
fn event_data(table: &str, batch: &RecordBatch) -> Result<String> {
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    let rows = String::from_utf8(w.into_inner())
        .map_err(|e| skystream_engine::Error::plan(format!("rows as JSON: {e}")))?;
    let table = serde_json::to_string(table)
        .map_err(|e| skystream_engine::Error::plan(format!("rows as JSON: {e}")))?;
    Ok(format!("{{\"table\":{table},\"rows\":{rows}}}"))
}

impl Sink for TapSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        async move {
            self.show(&batch);
            self.inner.write(batch).await
        }
        .boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        self.inner.flush()
    }

    fn status(&self) -> Option<Arc<SinkStatus>> {
        self.inner.status()
    }

    fn start(&mut self, start: SinkStart) -> BoxFuture<'_, Result<()>> {
        self.inner.start(start)
    }

    fn precommit(&mut self, epoch: u64) -> BoxFuture<'_, Result<serde_json::Value>> {
        self.inner.precommit(epoch)
    }

    fn commit(&mut self, epoch: u64) -> BoxFuture<'_, Result<()>> {
        self.inner.commit(epoch)
    }
}
