//! [`StreamTable`]: how a source table appears to DataFusion's planner.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, TableSource};
use datafusion::physical_plan::ExecutionPlan;
use skystream_engine::feed::{Feed, FeedExec};

/// A table read from a connector. Each scan DataFusion plans gets its own [`Feed`], which the
/// engine fills with the source's batches.
#[derive(Debug, Clone)]
pub struct StreamTable {
    pub name: String,
    pub schema: SchemaRef,
    /// The column named in `WATERMARK FOR`, if any.
    pub event_time: Option<String>,
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&columns)?);
        Ok(Arc::new(FeedExec::new(Feed::new(
            &self.name, schema, columns,
        ))))
    }
}

/// The stream table behind a logical table source, if it is one.
pub fn stream_table(source: &Arc<dyn TableSource>) -> Option<StreamTable> {
    let provider = datafusion::datasource::source_as_provider(source).ok()?;
    provider.downcast_ref::<StreamTable>().cloned()
}
