//! Tables over in-memory engine state (the current trends, the pipelines): each scan reads a
//! fresh snapshot.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// State the engine exposes as a table.
pub trait LiveTable: Send + Sync {
    /// The table's columns (fixed for its lifetime).
    fn schema(&self) -> SchemaRef;
    /// The rows now, in batches of [`LiveTable::schema`]; an error fails the query that
    /// scans the table (it is never an empty table in disguise).
    fn snapshot(&self) -> Result<Vec<RecordBatch>>;
}

/// A [`LiveTable`] as a DataFusion table.
pub struct LiveTableProvider {
    table: Arc<dyn LiveTable>,
}

impl LiveTableProvider {
    pub fn new(table: Arc<dyn LiveTable>) -> Self {
        Self { table }
    }
}

impl std::fmt::Debug for LiveTableProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveTableProvider").finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for LiveTableProvider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let mem = MemTable::try_new(self.table.schema(), vec![self.table.snapshot()?])?;
        mem.scan(state, projection, filters, limit).await
    }
}
