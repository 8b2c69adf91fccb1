//! The sink interface, and an in-memory sink for tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::future::{BoxFuture, FutureExt};

use crate::Result;

/// A running output of a pipeline. Batches arrive in the order the pipeline produced them;
/// a windowed query delivers each window's rows in one call.
pub trait Sink: Send {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>>;

    /// Makes everything written so far durable/visible. Called at the end of the input and
    /// before the pipeline stops.
    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        async { Ok(()) }.boxed()
    }

    /// The sink's health, shown in the pipeline's metrics (`None`: nothing to report).
    fn status(&self) -> Option<Arc<SinkStatus>> {
        None
    }

    // Checkpoints: a two-phase commit. At each checkpoint `precommit` makes what was written
    // durable but not yet visible where that matters, and returns the state to store in the
    // checkpoint; once the checkpoint is safely stored, `commit` makes it visible. Sinks whose
    // writes are idempotent (a replay rewrites the same values) need only the defaults.

    /// Called once before the first write: which pipeline this is, whether it checkpoints, and
    /// this sink's state in the checkpoint the pipeline resumed from (its epoch and what
    /// `precommit` returned then). Work that checkpoint pre-committed must be committed now (a
    /// crash may have come between the two phases). A sink that cannot work (a missing bucket,
    /// bad credentials) says so here, before any input is read.
    fn start(&mut self, start: SinkStart) -> BoxFuture<'_, Result<()>> {
        let _ = start;
        async { Ok(()) }.boxed()
    }

    /// Phase one of checkpoint `epoch`: everything written so far is made durable; returns
    /// what a restore needs to finish the commit.
    fn precommit(&mut self, epoch: u64) -> BoxFuture<'_, Result<serde_json::Value>> {
        let _ = epoch;
        let flush = self.flush();
        async move {
            flush.await?;
            Ok(serde_json::Value::Null)
        }
        .boxed()
    }

    /// Phase two: checkpoint `epoch` is stored; what it pre-committed becomes visible.
    fn commit(&mut self, epoch: u64) -> BoxFuture<'_, Result<()>> {
        let _ = epoch;
        async { Ok(()) }.boxed()
    }
}

/// See [`Sink::start`].
#[derive(Debug, Clone, Default)]
pub struct SinkStart {
    pub pipeline: String,
    pub checkpoints: bool,
    pub restored: Option<(u64, serde_json::Value)>,
}

/// Health of a sink, updated by the sink and read by metrics.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// The sink cannot write right now and is retrying (the pipeline waits for it).
    pub degraded: AtomicBool,
    /// Failed write attempts that were retried.
    pub retries: AtomicU64,
}

type MemoryTable = (SchemaRef, Vec<RecordBatch>);

/// Named in-memory tables shared between a [`MemorySink`] and whoever reads the results.
#[derive(Debug, Clone, Default)]
pub struct MemoryTables {
    tables: Arc<Mutex<HashMap<String, MemoryTable>>>,
}

impl MemoryTables {
    /// A sink appending to table `name` (created empty, replacing an earlier one of that name).
    pub fn sink(&self, name: &str, schema: SchemaRef) -> MemorySink {
        self.tables
            .lock()
            .unwrap()
            .insert(name.to_string(), (schema, Vec::new()));
        MemorySink {
            name: name.to_string(),
            tables: self.clone(),
        }
    }

    /// The batches written to `name` so far.
    pub fn batches(&self, name: &str) -> Option<MemoryTable> {
        self.tables.lock().unwrap().get(name).cloned()
    }
}

/// Collects every batch in a [`MemoryTables`] entry.
pub struct MemorySink {
    name: String,
    tables: MemoryTables,
}

impl Sink for MemorySink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        if let Some(t) = self.tables.tables.lock().unwrap().get_mut(&self.name) {
            t.1.push(batch);
        }
        async { Ok(()) }.boxed()
    }
}
