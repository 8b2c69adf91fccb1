//! Runs a DataFusion physical plan to completion over what its feeds hold, synchronously.

use std::sync::Arc;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use futures::StreamExt;

use crate::{Error, Result};

/// Executes every partition of `plan` and collects its non-empty output batches.
///
/// Stage plans are built from one-partition leaves and operators that compute in place, so
/// their streams never wait; a plan whose stream does wait is a planner bug and is reported.
///
/// A stage plan runs many times; state that DataFusion keeps in plan nodes between executions
/// (the dynamic filter of a top-K sort, for one) is reset first, so each run starts afresh.
pub fn run_plan(plan: &Arc<dyn ExecutionPlan>, ctx: &Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
    let plan = &reset_plan_states(plan.clone())?;
    let mut out = Vec::new();
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let partitions = plan.properties().output_partitioning().partition_count();
    for p in 0..partitions {
        let mut stream = plan.execute(p, ctx.clone())?;
        loop {
            match stream.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(batch)) => {
                    let batch = batch?;
                    if batch.num_rows() > 0 {
                        out.push(batch);
                    }
                }
                Poll::Ready(None) => break,
                Poll::Pending => {
                    return Err(Error::plan(format!(
                        "internal: stage plan would block ({})",
                        datafusion::physical_plan::displayable(plan.as_ref()).one_line()
                    )));
                }
            }
        }
    }
    Ok(out)
}
