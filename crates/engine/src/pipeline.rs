//! The pipeline runtime: one task drives every flow of a pipeline, single-threaded.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use tokio::sync::{Notify, mpsc};

use crate::checkpoint::{
    Checkpoint, CheckpointConfig, CheckpointStore, Manifest, SinkCheckpoint, SourceCheckpoint,
};
pub use crate::flow::{Flow, Head, WindowStage};
use crate::metrics::{MetricsSnapshot, PipelineMetrics};
use crate::sink::{Sink, SinkStart};
use crate::source::{Position, Source, SourceContext, SourceCounters, SourceEvent};
use crate::watermark::{WatermarkSpec, WatermarkTracker};
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

/// Settings of a running pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// The pipeline's name (in checkpoints, lake file names and logs).
    pub name: String,
    /// A source with no input for this long stops holding its flows' watermark back.
    pub idle_timeout: Duration,
    /// Batches buffered between sources and the engine.
    pub channel_capacity: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            name: "pipeline".into(),
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
    /// Where to checkpoint (`None`: no checkpoints; sinks commit as they go).
    pub checkpoint: Option<CheckpointConfig>,
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
        mut flows: Vec<Flow>,
        sinks: Vec<SinkSlot>,
        task_ctx: Arc<TaskContext>,
    ) -> Self {
        // Window state counts against the session's memory pool, beside DataFusion's operators.
        let pool = task_ctx.memory_pool();
        for f in &mut flows {
            let names: Vec<String> = f
                .window_names()
                .into_iter()
                .map(|w| format!("operator {w} of flow '{}'", f.name))
                .collect();
            for (w, name) in f.window_ops_mut().zip(names) {
                w.track_memory(pool, name);
            }
        }
        Self {
            sources,
            flows,
            sinks,
            task_ctx,
            config: PipelineConfig::default(),
            checkpoint: None,
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
    ///
    /// With checkpoints configured, the pipeline first resumes from the newest stored
    /// checkpoint (if any), checkpoints every interval, and takes a last checkpoint when it
    /// finishes or is stopped.
    pub async fn run(self) -> Result<RunSummary> {
        let Pipeline {
            sources,
            mut flows,
            mut sinks,
            task_ctx,
            config,
            checkpoint,
            metrics,
            stop,
        } = self;
        let started = Instant::now();
        let mut trackers: Vec<WatermarkTracker> = sources
            .iter()
            .map(|s| WatermarkTracker::new(s.watermark, config.idle_timeout))
            .collect();
        let mut positions: Vec<Option<Position>> = vec![None; sources.len()];
        let source_names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();

        // Resume from the newest checkpoint, if any.
        let mut ck = match &checkpoint {
            Some(c) => {
                c.location.check().await?;
                let store = CheckpointStore::new(c.location.clone());
                let restored = store.latest().await?;
                let mut sink_states = vec![None; sinks.len()];
                let mut epoch = 0;
                if let Some(r) = restored {
                    let m = &r.manifest;
                    restore_state(
                        &r,
                        &source_names,
                        &mut trackers,
                        &mut positions,
                        &mut flows,
                        &sinks,
                        &mut sink_states,
                    )?;
                    epoch = m.epoch;
                    metrics.restored_epoch.store(epoch, Ordering::Relaxed);
                    tracing::info!(
                        pipeline = %config.name,
                        epoch,
                        "resumed from checkpoint {}",
                        store.location.url
                    );
                }
                Some((store, c.clone(), epoch, sink_states))
            }
            None => None,
        };
        for (i, s) in sinks.iter_mut().enumerate() {
            let restored = ck
                .as_mut()
                .and_then(|(_, _, epoch, states)| states[i].take().map(|st| (*epoch, st)));
            s.sink
                .start(SinkStart {
                    pipeline: config.name.clone(),
                    checkpoints: ck.is_some(),
                    restored,
                })
                .await
                .map_err(|e| Error::connector(&s.name, e))?;
            if let Some(st) = s.sink.status() {
                metrics.sinks.lock().unwrap().push((s.name.clone(), st));
            }
        }
        let mut ck = ck.map(|(store, cfg, epoch, _)| Checkpointer {
            store,
            interval: cfg.interval,
            retain: cfg.retain,
            epoch,
            pipeline: config.name.clone(),
        });

        {
            let mut ops = metrics.operators.lock().unwrap();
            ops.clear();
            for f in &flows {
                for (name, c) in f.operators() {
                    ops.push((f.name.clone(), name, c));
                }
            }
        }
        let (tx, mut rx) = mpsc::channel::<(usize, SourceEvent)>(config.channel_capacity.max(1));
        let (err_tx, mut err_rx) = mpsc::unbounded_channel::<(String, Error)>();
        let mut tasks = Vec::new();
        for (i, slot) in sources.into_iter().enumerate() {
            let counters = Arc::new(SourceCounters::default());
            metrics
                .sources
                .lock()
                .unwrap()
                .push((slot.name.clone(), counters.clone()));
            let ctx = SourceContext {
                index: i,
                tx: tx.clone(),
                restore: positions[i].clone(),
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
        metrics.started.store(true, Ordering::Relaxed);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ck_every = ck.as_ref().map(|c| c.interval).unwrap_or(Duration::MAX);
        let mut next_ck =
            tokio::time::Instant::now() + ck_every.min(Duration::from_secs(86400 * 365));
        let result: Result<bool> = async {
            loop {
                tokio::select! {
                    biased;
                    _ = stop.notify.notified() => return Ok(false),
                    Some((name, e)) = err_rx.recv() => {
                        return Err(Error::connector(name, e));
                    }
                    _ = tokio::time::sleep_until(next_ck), if ck.is_some() => {
                        if let Some(c) = ck.as_mut() {
                            c.take(&source_names, &trackers, &positions, &mut flows, &mut sinks, &metrics, false).await?;
                        }
                        next_ck = tokio::time::Instant::now() + ck_every;
                    }
                    msg = rx.recv() => {
                        let Some((i, event)) = msg else { return Ok(trackers.iter().all(|t| t.ended())) };
                        match event {
                            SourceEvent::Batch { batch, split, position } => {
                                metrics.rows_in.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                                let batch = trackers[i].observe(batch, split)?;
                                if batch.num_rows() > 0 {
                                    for flow in flows.iter_mut().filter(|f| f.reads(i)) {
                                        let out = flow.process(i, &batch, &task_ctx)?;
                                        write_flow(flow, &mut sinks, out, &metrics).await?;
                                    }
                                }
                                if position.is_some() {
                                    positions[i] = position;
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
                let [windows, wlate, panes, state_bytes] = flows
                    .iter()
                    .map(Flow::window_stats)
                    .fold([0; 4], |a, b| std::array::from_fn(|i| a[i] + b[i]));
                metrics.late_rows.store(late + wlate, Ordering::Relaxed);
                metrics.windows_emitted.store(windows, Ordering::Relaxed);
                metrics.open_panes.store(panes, Ordering::Relaxed);
                metrics.state_bytes.store(state_bytes, Ordering::Relaxed);
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
        if let Some(c) = ck.as_mut() {
            c.take(
                &source_names,
                &trackers,
                &positions,
                &mut flows,
                &mut sinks,
                &metrics,
                true,
            )
            .await?;
        }
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

/// Applies a restored checkpoint to a pipeline about to start; sink states go to `sink_states`.
fn restore_state(
    r: &Checkpoint,
    source_names: &[String],
    trackers: &mut [WatermarkTracker],
    positions: &mut [Option<Position>],
    flows: &mut [Flow],
    sinks: &[SinkSlot],
    sink_states: &mut [Option<serde_json::Value>],
) -> Result<()> {
    let m = &r.manifest;
    let names = |v: Vec<&str>| v.join(", ");
    let saved: Vec<&str> = m.sources.iter().map(|s| s.name.as_str()).collect();
    let flows_saved: Vec<&str> = m.flows.iter().map(|s| s.name.as_str()).collect();
    let now: Vec<&str> = source_names.iter().map(String::as_str).collect();
    let flows_now: Vec<&str> = flows.iter().map(|f| f.name.as_str()).collect();
    if saved != now || flows_saved != flows_now {
        return Err(Error::plan(format!(
            "checkpoint {} of pipeline '{}' was taken from other sources or queries \
             (sources [{}], flows [{}]; this pipeline: [{}], [{}]); \
             use a new checkpoint location for a changed pipeline",
            m.epoch,
            m.pipeline,
            names(saved),
            names(flows_saved),
            names(now),
            names(flows_now)
        )));
    }
    for (i, s) in m.sources.iter().enumerate() {
        positions[i] = s.position.clone();
        trackers[i].restore(&s.tracker);
    }
    for (flow, saved) in flows.iter_mut().zip(&m.flows) {
        flow.restore(saved, &r.blobs)?;
    }
    for s in &m.sinks {
        match sinks.iter().position(|k| k.name == s.name) {
            Some(i) => sink_states[i] = Some(s.state.clone()),
            None => {
                return Err(Error::plan(format!(
                    "checkpoint {} has state of sink '{}', which this pipeline does not write",
                    m.epoch, s.name
                )));
            }
        }
    }
    Ok(())
}

/// Takes a pipeline's checkpoints.
struct Checkpointer {
    store: CheckpointStore,
    interval: Duration,
    retain: usize,
    /// The last epoch stored (or restored).
    epoch: u64,
    pipeline: String,
}

impl Checkpointer {
    /// Takes checkpoint `epoch + 1`: sinks pre-commit, the snapshot is stored, sinks commit.
    /// A failure is logged and counted and the previous checkpoint stays in force (what the
    /// sinks pre-committed is carried into the next one), unless `last`: then it is an error.
    #[allow(clippy::too_many_arguments)]
    async fn take(
        &mut self,
        source_names: &[String],
        trackers: &[WatermarkTracker],
        positions: &[Option<Position>],
        flows: &mut [Flow],
        sinks: &mut [SinkSlot],
        metrics: &PipelineMetrics,
        last: bool,
    ) -> Result<()> {
        let started = Instant::now();
        let epoch = self.epoch + 1;
        let r = self
            .try_take(epoch, source_names, trackers, positions, flows, sinks)
            .await;
        match r {
            Ok(bytes) => {
                self.epoch = epoch;
                let us = started.elapsed().as_micros() as u64;
                metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
                metrics
                    .last_checkpoint_epoch
                    .store(epoch, Ordering::Relaxed);
                metrics.last_checkpoint_us.store(us, Ordering::Relaxed);
                metrics
                    .last_checkpoint_bytes
                    .store(bytes as u64, Ordering::Relaxed);
                metrics
                    .last_checkpoint_at_ms
                    .store(crate::time::now_ms(), Ordering::Relaxed);
                tracing::debug!(pipeline = %self.pipeline, epoch, bytes, us, "checkpoint stored");
                // Phase two. A failure here is retried at the next checkpoint (whose state
                // still lists the work) and on restore.
                for s in sinks.iter_mut() {
                    if let Err(e) = s.sink.commit(epoch).await {
                        tracing::warn!(sink = %s.name, epoch, "commit failed, retried later: {e}");
                        if last {
                            return Err(Error::connector(&s.name, e));
                        }
                    }
                }
                if let Err(e) = self.store.prune(epoch, self.retain).await {
                    tracing::warn!(pipeline = %self.pipeline, "cannot delete old checkpoints: {e}");
                }
                Ok(())
            }
            Err(e) => {
                metrics.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
                if last {
                    return Err(Error::plan(format!("final checkpoint {epoch} failed: {e}")));
                }
                tracing::warn!(
                    pipeline = %self.pipeline,
                    epoch,
                    "checkpoint failed; checkpoint {} stays the latest: {e}",
                    self.epoch
                );
                // Later attempts use later epochs: files named after this one stay unique.
                self.epoch = epoch;
                Ok(())
            }
        }
    }

    async fn try_take(
        &mut self,
        epoch: u64,
        source_names: &[String],
        trackers: &[WatermarkTracker],
        positions: &[Option<Position>],
        flows: &mut [Flow],
        sinks: &mut [SinkSlot],
    ) -> Result<usize> {
        let mut sink_states = Vec::with_capacity(sinks.len());
        for s in sinks.iter_mut() {
            let state = s
                .sink
                .precommit(epoch)
                .await
                .map_err(|e| Error::connector(&s.name, e))?;
            sink_states.push(SinkCheckpoint {
                name: s.name.clone(),
                state,
            });
        }
        let mut blobs = Vec::new();
        let flows = flows
            .iter_mut()
            .map(|f| f.snapshot(&mut blobs))
            .collect::<Result<Vec<_>>>()?;
        let manifest = Manifest {
            format: crate::checkpoint::FORMAT,
            pipeline: self.pipeline.clone(),
            epoch,
            created_ms: crate::time::now_ms(),
            sources: source_names
                .iter()
                .zip(trackers)
                .zip(positions)
                .map(|((name, t), p)| SourceCheckpoint {
                    name: name.clone(),
                    position: p.clone(),
                    tracker: t.snapshot(),
                })
                .collect(),
            flows,
            sinks: sink_states,
        };
        let stored = self.store.write(&Checkpoint { manifest, blobs }).await?;
        Ok(stored.bytes)
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

/// Writes a flow's rows to each of its sinks.
async fn write_flow(
    flow: &mut Flow,
    sinks: &mut [SinkSlot],
    out: Vec<RecordBatch>,
    metrics: &PipelineMetrics,
) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    flow.count_sinks(&out);
    for &s in &flow.sinks {
        write(&mut sinks[s], out.clone(), metrics).await?;
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
            .sources()
            .filter_map(|s| trackers[s].effective(now))
            .min();
        let Some(wm) = wm else { continue };
        lowest = lowest.min(wm);
        let out = flow.advance(wm, ctx)?;
        write_flow(flow, sinks, out, metrics).await?;
    }
    if lowest != i64::MAX {
        metrics.watermark.store(lowest, Ordering::Relaxed);
    }
    Ok(())
}
