//! The pipeline runtime: one task drives every flow of a pipeline, single-threaded.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use tokio::sync::{Notify, mpsc};

use crate::exec::run_plan;
use crate::feed::Feed;
use crate::metrics::{MetricsSnapshot, PipelineMetrics};
use crate::sink::Sink;
use crate::source::{Source, SourceContext, SourceCounters, SourceEvent};
use crate::watermark::{WatermarkSpec, WatermarkTracker};
use crate::window::WindowAggregate;
use crate::{Error, Result};

/// A source of the pipeline with its event-time declaration.
pub struct SourceSlot {
    pub name: String,
    pub source: Box<dyn Source>,
    pub watermark: Option<WatermarkSpec>,
}

pub struct SinkSlot {
    pub name: String,
    pub sink: Box<dyn Sink>,
}

/// One step of a flow.
pub enum Stage {
    /// A DataFusion physical plan run on each step's batches. The first stage of a flow reads
    /// the flow's source feeds; a later one reads `input`, fed with the previous stage's output.
    Plan {
        plan: Arc<dyn ExecutionPlan>,
        input: Option<Arc<Feed>>,
    },
    /// A windowed aggregate; emits complete windows as the watermark advances.
    Window(Box<WindowAggregate>),
}

/// The rows of one `INSERT INTO`: from sources through stages into a sink.
pub struct Flow {
    pub name: String,
    /// Source index and the feed of the first stage's plan that reads it.
    pub inputs: Vec<(usize, Arc<Feed>)>,
    pub stages: Vec<Stage>,
    pub sink: usize,
    watermark: i64,
}

impl Flow {
    pub fn new(
        name: impl Into<String>,
        inputs: Vec<(usize, Arc<Feed>)>,
        stages: Vec<Stage>,
        sink: usize,
    ) -> Self {
        Self {
            name: name.into(),
            inputs,
            stages,
            sink,
            watermark: i64::MIN,
        }
    }

    /// Runs stages `from..` on `data` until a window stage absorbs it; returns sink rows.
    fn run_from(
        &mut self,
        from: usize,
        mut data: Vec<RecordBatch>,
        ctx: &Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        for stage in &mut self.stages[from..] {
            match stage {
                Stage::Plan { plan, input } => {
                    if let Some(feed) = input {
                        if data.is_empty() {
                            return Ok(Vec::new());
                        }
                        for b in &data {
                            feed.push(b)?;
                        }
                    }
                    data = run_plan(plan, ctx)?;
                }
                Stage::Window(w) => {
                    for b in &data {
                        w.process(b)?;
                    }
                    return Ok(Vec::new());
                }
            }
        }
        Ok(data)
    }

    /// Advances window stages to `wm` and carries what they emit downstream.
    fn advance(&mut self, wm: i64, ctx: &Arc<TaskContext>) -> Result<Vec<RecordBatch>> {
        if wm <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = wm;
        let mut out = Vec::new();
        for i in 0..self.stages.len() {
            let emitted = match &mut self.stages[i] {
                Stage::Window(w) => w.advance(wm)?,
                Stage::Plan { .. } => continue,
            };
            // Each window runs through the stages after it on its own: a plan there sees the
            // rows of exactly one window (the planner relies on it, see `scope_topk_to_window`).
            for window in emitted {
                out.extend(self.run_from(i + 1, vec![window], ctx)?);
            }
        }
        Ok(out)
    }

    fn window_stats(&self) -> (u64, u64, u64) {
        self.stages.iter().fold((0, 0, 0), |acc, s| match s {
            Stage::Window(w) => {
                let st = w.stats();
                (
                    acc.0 + st.windows_emitted,
                    acc.1 + st.late_rows,
                    acc.2 + st.open_panes as u64,
                )
            }
            Stage::Plan { .. } => acc,
        })
    }
}

/// Settings of a running pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// A source with no input for this long stops holding its flows' watermark back.
    pub idle_timeout: Duration,
    /// Batches buffered between sources and the engine.
    pub channel_capacity: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(5),
            channel_capacity: 16,
        }
    }
}

/// Asks a running pipeline to stop (its sinks are flushed; open windows are not emitted).
#[derive(Debug, Clone, Default)]
pub struct StopHandle {
    notify: Arc<Notify>,
}

impl StopHandle {
    pub fn stop(&self) {
        self.notify.notify_one();
    }
}

/// A built pipeline, ready to run.
pub struct Pipeline {
    pub sources: Vec<SourceSlot>,
    pub flows: Vec<Flow>,
    pub sinks: Vec<SinkSlot>,
    pub task_ctx: Arc<TaskContext>,
    pub config: PipelineConfig,
    metrics: Arc<PipelineMetrics>,
    stop: StopHandle,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub metrics: MetricsSnapshot,
    pub elapsed: Duration,
    /// Whether every source reached its end (as opposed to a stop request).
    pub completed: bool,
}

impl Pipeline {
    pub fn new(
        sources: Vec<SourceSlot>,
        flows: Vec<Flow>,
        sinks: Vec<SinkSlot>,
        task_ctx: Arc<TaskContext>,
    ) -> Self {
        Self {
            sources,
            flows,
            sinks,
            task_ctx,
            config: PipelineConfig::default(),
            metrics: Arc::default(),
            stop: StopHandle::default(),
        }
    }

    pub fn metrics(&self) -> Arc<PipelineMetrics> {
        self.metrics.clone()
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs until every source ends (then every open window is flushed) or a stop is requested.
    pub async fn run(self) -> Result<RunSummary> {
        let Pipeline {
            sources,
            mut flows,
            mut sinks,
            task_ctx,
            config,
            metrics,
            stop,
        } = self;
        let started = Instant::now();
        let (tx, mut rx) = mpsc::channel::<(usize, SourceEvent)>(config.channel_capacity.max(1));
        let (err_tx, mut err_rx) = mpsc::unbounded_channel::<(String, Error)>();
        let mut trackers = Vec::new();
        let mut tasks = Vec::new();
        for (i, slot) in sources.into_iter().enumerate() {
            let counters = Arc::new(SourceCounters::default());
            metrics
                .sources
                .lock()
                .unwrap()
                .push((slot.name.clone(), counters.clone()));
            trackers.push(WatermarkTracker::new(slot.watermark, config.idle_timeout));
            let ctx = SourceContext {
                index: i,
                tx: tx.clone(),
                restore: None,
                counters,
            };
            let err_tx = err_tx.clone();
            let name = slot.name;
            let fut = slot.source.run(ctx);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = fut.await {
                    let _ = err_tx.send((name, e));
                }
            }));
        }
        drop(tx);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result: Result<bool> = async {
            loop {
                tokio::select! {
                    biased;
                    _ = stop.notify.notified() => return Ok(false),
                    Some((name, e)) = err_rx.recv() => {
                        return Err(Error::connector(name, e));
                    }
                    msg = rx.recv() => {
                        let Some((i, event)) = msg else { return Ok(trackers.iter().all(|t| t.ended())) };
                        match event {
                            SourceEvent::Batch { batch, split, .. } => {
                                metrics.rows_in.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                                let batch = trackers[i].observe(batch, split)?;
                                if batch.num_rows() > 0 {
                                    for flow in flows.iter_mut() {
                                        let mut fed = false;
                                        for (s, feed) in &flow.inputs {
                                            if *s == i {
                                                feed.push(&batch)?;
                                                fed = true;
                                            }
                                        }
                                        if fed {
                                            let out = flow.run_from(0, Vec::new(), &task_ctx)?;
                                            write(&mut sinks[flow.sink], out, &metrics).await?;
                                        }
                                    }
                                }
                            }
                            SourceEvent::Heartbeat { event_time_ns } => trackers[i].heartbeat(event_time_ns),
                            SourceEvent::Splits(ids) => trackers[i].announce(&ids),
                            SourceEvent::End => trackers[i].end(),
                        }
                    }
                    _ = tick.tick() => {}
                }
                advance_all(&mut flows, &mut sinks, &mut trackers, &task_ctx, &metrics).await?;
                let late: u64 = trackers.iter().map(|t| t.late_rows).sum();
                let (windows, wlate, panes) = flows.iter().map(Flow::window_stats).fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
                metrics.late_rows.store(late + wlate, Ordering::Relaxed);
                metrics.windows_emitted.store(windows, Ordering::Relaxed);
                metrics.open_panes.store(panes, Ordering::Relaxed);
                if !trackers.is_empty() && trackers.iter().all(|t| t.ended()) {
                    return Ok(true);
                }
            }
        }
        .await;
        for t in &tasks {
            t.abort();
        }
        let completed = result?;
        for s in sinks.iter_mut() {
            s.sink
                .flush()
                .await
                .map_err(|e| Error::connector(&s.name, e))?;
        }
        Ok(RunSummary {
            metrics: metrics.snapshot(),
            elapsed: started.elapsed(),
            completed,
        })
    }
}

async fn write(
    sink: &mut SinkSlot,
    batches: Vec<RecordBatch>,
    metrics: &PipelineMetrics,
) -> Result<()> {
    for b in batches {
        metrics
            .rows_out
            .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        sink.sink
            .write(b)
            .await
            .map_err(|e| Error::connector(&sink.name, e))?;
    }
    Ok(())
}

async fn advance_all(
    flows: &mut [Flow],
    sinks: &mut [SinkSlot],
    trackers: &mut [WatermarkTracker],
    ctx: &Arc<TaskContext>,
    metrics: &PipelineMetrics,
) -> Result<()> {
    let now = Instant::now();
    let mut lowest = i64::MAX;
    for flow in flows.iter_mut() {
        let wm = flow
            .inputs
            .iter()
            .filter_map(|(s, _)| trackers[*s].effective(now))
            .min();
        let Some(wm) = wm else { continue };
        lowest = lowest.min(wm);
        let out = flow.advance(wm, ctx)?;
        write(&mut sinks[flow.sink], out, metrics).await?;
    }
    if lowest != i64::MAX {
        metrics.watermark.store(lowest, Ordering::Relaxed);
    }
    Ok(())
}
