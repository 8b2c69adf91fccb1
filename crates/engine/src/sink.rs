//! The sink interface, and an in-memory sink for tests.

use std::collections::HashMap;
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
