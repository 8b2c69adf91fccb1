//! Cancelling a statement for real.
//!
//! A statement that times out (or is cancelled) has its task aborted, which takes effect at
//! the task's next yield; DataFusion's operators yield between batches, but a nested loop join
//! with a selective filter joins a whole probe batch with the whole build side inside one
//! poll — billions of filter evaluations before it yields. The physical optimizer rule
//! [`CancellableJoins`] wraps such join filters in [`Cancellable`], which checks the
//! connection's cancel flag at every evaluation (once per chunk of rows) and fails the
//! statement once it is set, so the work stops within a chunk.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::datatypes::{DataType, FieldRef, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, exec_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::joins::utils::JoinFilter;
use datafusion::physical_plan::joins::{NestedLoopJoinExec, NestedLoopJoinExecBuilder};
use tokio::sync::Notify;

/// One connection's cancel state: its running statement stops when it is cancelled.
#[derive(Debug, Default)]
pub(crate) struct Canceller {
    notify: Notify,
    cancelled: AtomicBool,
}

impl Canceller {
    /// Cancels the statement running now (a cancel request, a timeout, a dropped client).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// A new statement starts: it is not cancelled.
    pub(crate) fn reset(&self) {
        self.cancelled.store(false, Ordering::SeqCst);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Resolves at the next [`Canceller::cancel`].
    pub(crate) async fn cancelled(&self) {
        self.notify.notified().await
    }
}

/// An expression that fails once its connection's statement is cancelled.
#[derive(Debug)]
pub(crate) struct Cancellable {
    inner: Arc<dyn PhysicalExpr>,
    cancel: Arc<Canceller>,
}

impl PartialEq for Cancellable {
    fn eq(&self, other: &Self) -> bool {
        self.inner.as_ref() == other.inner.as_ref() && Arc::ptr_eq(&self.cancel, &other.cancel)
    }
}

impl Eq for Cancellable {}

impl Hash for Cancellable {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.as_ref().hash(state);
    }
}

impl fmt::Display for Cancellable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Plans print as they would without the wrapper.
        fmt::Display::fmt(&self.inner, f)
    }
}

impl PhysicalExpr for Cancellable {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.inner.data_type(input_schema)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.inner.nullable(input_schema)
    }

    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        self.inner.return_field(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        if self.cancel.is_cancelled() {
            return exec_err!("canceling statement");
        }
        self.inner.evaluate(batch)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(Cancellable {
            inner: children[0].clone(),
            cancel: self.cancel.clone(),
        }))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }
}

/// Wraps the filters of nested loop joins in [`Cancellable`] (see the module documentation).
#[derive(Debug)]
pub(crate) struct CancellableJoins {
    pub cancel: Arc<Canceller>,
}

impl PhysicalOptimizerRule for CancellableJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(nlj) = node.downcast_ref::<NestedLoopJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(filter) = nlj.filter() else {
                return Ok(Transformed::no(node));
            };
            if filter.expression().downcast_ref::<Cancellable>().is_some() {
                return Ok(Transformed::no(node));
            }
            let wrapped = JoinFilter::new(
                Arc::new(Cancellable {
                    inner: filter.expression().clone(),
                    cancel: self.cancel.clone(),
                }),
                filter.column_indices().to_vec(),
                filter.schema().clone(),
            );
            let join = NestedLoopJoinExecBuilder::from(nlj)
                .with_filter(Some(wrapped))
                .build()?;
            Ok(Transformed::yes(Arc::new(join) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "cancellable_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
