//! [`FeedExec`]: the leaf of a stage's DataFusion plan. The engine pushes the batches of one
//! step into its [`Feed`] and executes the plan; the plan reads them from the feed.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DFResult;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};

/// A queue of batches for one plan leaf, with the columns it keeps.
#[derive(Debug)]
pub struct Feed {
    /// Name of what feeds it (a source table, or the stage before).
    pub name: String,
    /// Schema of the batches the leaf produces.
    pub schema: SchemaRef,
    /// Column `i` of the output is column `columns[i]` of the table the feed reads.
    pub columns: Vec<usize>,
    /// Where each output column sits in the batches pushed in (set when the flow is wired).
    input_map: Mutex<Option<Vec<usize>>>,
    queue: Mutex<VecDeque<RecordBatch>>,
}

impl Feed {
    pub fn new(name: impl Into<String>, schema: SchemaRef, columns: Vec<usize>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            schema,
            columns,
            input_map: Mutex::new(None),
            queue: Mutex::new(VecDeque::new()),
        })
    }

    /// Declares that pushed batches hold the table columns `input_columns`, in that order.
    pub fn set_input_columns(&self, input_columns: &[usize]) {
        let map = self
            .columns
            .iter()
            .map(|c| {
                input_columns
                    .iter()
                    .position(|i| i == c)
                    .expect("input holds every fed column")
            })
            .collect();
        *self.input_map.lock().unwrap() = Some(map);
    }

    /// Queues a batch for the next execution of the plan.
    pub fn push(&self, batch: &RecordBatch) -> DFResult<()> {
        let batch = match &*self.input_map.lock().unwrap() {
            Some(map) => {
                let cols = map.iter().map(|&i| batch.column(i).clone()).collect();
                RecordBatch::try_new_with_options(
                    self.schema.clone(),
                    cols,
                    &arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
                )?
            }
            None => batch.clone().with_schema(self.schema.clone())?,
        };
        self.queue.lock().unwrap().push_back(batch);
        Ok(())
    }

    /// A feed like this one, with a queue of its own: for a copy of its plan run on another
    /// thread.
    pub fn fork(&self) -> Arc<Self> {
        Arc::new(Self {
            name: self.name.clone(),
            schema: self.schema.clone(),
            columns: self.columns.clone(),
            input_map: Mutex::new(self.input_map.lock().unwrap().clone()),
            queue: Mutex::new(VecDeque::new()),
        })
    }

    fn drain(&self) -> Vec<RecordBatch> {
        self.queue.lock().unwrap().drain(..).collect()
    }
}

/// A feed and its fork.
pub type FeedFork = (Arc<Feed>, Arc<Feed>);

/// A copy of `plan` whose feeds are forks ([`Feed::fork`]), and those feeds: the copy can run
/// on another thread beside the original. Both compute the same rows from the same input.
pub fn fork_plan(
    plan: &Arc<dyn ExecutionPlan>,
) -> DFResult<(Arc<dyn ExecutionPlan>, Vec<FeedFork>)> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let mut feeds = Vec::new();
    let plan = plan
        .clone()
        .transform_up(|node| {
            let Some(f) = node.downcast_ref::<FeedExec>() else {
                return Ok(Transformed::no(node));
            };
            let fork = f.feed().fork();
            feeds.push((f.feed().clone(), fork.clone()));
            Ok(Transformed::yes(
                Arc::new(FeedExec::new(fork)) as Arc<dyn ExecutionPlan>
            ))
        })?
        .data;
    Ok((plan, feeds))
}

/// Execution plan leaf reading the batches queued in a [`Feed`].
#[derive(Debug)]
pub struct FeedExec {
    feed: Arc<Feed>,
    properties: Arc<PlanProperties>,
}

impl FeedExec {
    pub fn new(feed: Arc<Feed>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(feed.schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            feed,
            properties: Arc::new(properties),
        }
    }

    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }
}

impl DisplayAs for FeedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "FeedExec: {}", self.feed.name)
    }
}

impl ExecutionPlan for FeedExec {
    fn name(&self) -> &str {
        "FeedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DFResult<TreeNodeRecursion>,
    ) -> DFResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        Ok(Box::pin(MemoryStream::try_new(
            self.feed.drain(),
            self.feed.schema.clone(),
            None,
        )?))
    }
}
