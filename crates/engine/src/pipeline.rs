//! The pipeline runtime: one task drives every flow of a pipeline, single-threaded.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::{
    Checkpoint, CheckpointConfig, CheckpointStore, Manifest, SinkCheckpoint, SourceCheckpoint,
};
pub use crate::flow::{Flow, Head, WindowStage};
use crate::metrics::{MetricsSnapshot, PipelineMetrics};
use crate::sink::{Sink, SinkStart, SinkStatus};
use crate::source::{Position, Source, SourceContext, SourceCounters, SourceEvent};
use crate::stage0;
pub use crate::stop::StopHandle;
use crate::watermark::{WatermarkSpec, WatermarkTracker};
use crate::{Error, Result};

/// Once a stop is asked for, a sink call still in flight gets this long to finish (a last
/// upload, a flush) before it is abandoned; a sink that is failing and retrying is abandoned at
/// once. The previous checkpoint then stays in force, so nothing is lost.
const STOP_GRACE: Duration = Duration::from_secs(10);

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
    /// How far ahead of the wall clock the event time of a live source (Jetstream, Kafka) may
    /// be; later events are skipped and counted (`None`: no bound).
    pub max_event_ahead: Option<Duration>,
    /// Threads the pipeline computes on: with more than one, the plans before the windows
    /// (decoding, functions, UNNEST) run on several batches at once, and the windows take
    /// their rows in input order, so results are those of one thread.
    pub threads: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            name: "pipeline".into(),
            idle_timeout: Duration::from_secs(5),
            channel_capacity: 16,
            max_event_ahead: Some(DEFAULT_MAX_EVENT_AHEAD),
            threads: 1,
        }
    }
}

/// The default of [`PipelineConfig::max_event_ahead`].
pub const DEFAULT_MAX_EVENT_AHEAD: Duration = Duration::from_secs(600);

/// A pipeline running on a thread of its own (see [`Pipeline::spawn`]).
pub struct RunningPipeline {
    pub stop: StopHandle,
    done: oneshot::Receiver<Result<RunSummary>>,
}

impl RunningPipeline {
    /// Waits for the run to end.
    pub async fn wait(self) -> Result<RunSummary> {
        self.done
            .await
            .unwrap_or_else(|_| Err(Error::plan("the pipeline's thread ended without a result")))
    }
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
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
        let stop = StopHandle::default();
        for f in &mut flows {
            for w in f.window_ops_mut() {
                w.set_stop(stop.clone());
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
            stop,
        }
    }

    /// Runs the pipeline on a thread of its own, with a runtime of its own, so that its work
    /// (decoding, windows, sinks) never holds up the caller's runtime, and one pipeline's CPU
    /// use does not hold up another's. A panic anywhere in the pipeline (its sources included)
    /// ends the run with an error saying so; an abort ends it at once.
    pub fn spawn(self) -> std::io::Result<RunningPipeline> {
        let stop = self.stop.clone();
        let (tx, done) = oneshot::channel();
        let name = self.config.name.clone();
        let aborted = stop.clone();
        std::thread::Builder::new()
            .name(format!("pipeline-{name}"))
            .stack_size(32 << 20)
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(Error::Io(e)));
                        return;
                    }
                };
                let r = rt.block_on(async move {
                    let run = std::panic::AssertUnwindSafe(self.run()).catch_unwind();
                    tokio::select! {
                        r = run => r.unwrap_or_else(|p| {
                            Err(Error::plan(format!("the pipeline panicked: {}", panic_message(&*p))))
                        }),
                        _ = aborted.aborted() => Err(Error::Stopped("aborted".into())),
                    }
                });
                // Source tasks still running are dropped with the runtime, without waiting for
                // blocking work.
                rt.shutdown_timeout(Duration::from_secs(1));
                let _ = tx.send(r);
            })?;
        Ok(RunningPipeline { stop, done })
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
            .map(|s| {
                let live = s.source.event_time_is_wall_clock();
                WatermarkTracker::new(s.watermark, config.idle_timeout)
                    .with_max_ahead(config.max_event_ahead.filter(|_| live))
            })
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
            let status = s.sink.status();
            let start = s.sink.start(SinkStart {
                pipeline: config.name.clone(),
                checkpoints: ck.is_some(),
                restored,
            });
            guarded(&stop, status.as_deref(), &s.name, start)
                .await
                .map_err(|e| sink_error(&s.name, e))?;
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
        let threads = config.threads.max(1);
        // Copies of every flow's heads for the other threads.
        let forks: Vec<Vec<Vec<Head>>> = (1..threads)
            .map(|_| flows.iter().map(Flow::fork_heads).collect::<Result<_>>())
            .collect::<Result<_>>()?;
        let (tx, mut rx) =
            mpsc::channel::<(usize, SourceEvent)>(config.channel_capacity.max(1).max(2 * threads));
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
                event_time_column: slot.watermark.map(|w| w.column),
            };
            let err_tx = err_tx.clone();
            let name = slot.name;
            let fut = std::panic::AssertUnwindSafe(slot.source.run(ctx)).catch_unwind();
            tasks.push(tokio::spawn(async move {
                match fut.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        let _ = err_tx.send((name, e));
                    }
                    Err(p) => {
                        let e = Error::plan(format!("panicked: {}", panic_message(&*p)));
                        let _ = err_tx.send((name, e));
                    }
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
                    _ = stop.stopping() => return Ok(false),
                    Some((name, e)) = err_rx.recv() => {
                        return Err(Error::connector(name, e));
                    }
                    _ = tokio::time::sleep_until(next_ck), if ck.is_some() => {
                        if let Some(c) = ck.as_mut() {
                            c.take(&source_names, &trackers, &positions, &mut flows, &mut sinks, &metrics, &stop, false).await?;
                        }
                        next_ck = tokio::time::Instant::now() + ck_every;
                    }
                    msg = rx.recv() => {
                        let Some((i, event)) = msg else {
                            // Every source is gone: one that failed (or panicked) says so once
                            // its task has ended.
                            for t in tasks.iter_mut() {
                                let _ = t.await;
                            }
                            if let Ok((name, e)) = err_rx.try_recv() {
                                return Err(Error::connector(name, e));
                            }
                            return Ok(trackers.iter().all(|t| t.ended()));
                        };
                        match event {
                            SourceEvent::Batch { batch, split, position } => {
                                // With several threads, the batches already waiting are taken
                                // together and their heads run in parallel.
                                let mut group = vec![(i, batch, split, position)];
                                let mut after = None;
                                while threads > 1 && group.len() < 4 * threads {
                                    match rx.try_recv() {
                                        Ok((j, SourceEvent::Batch { batch, split, position })) => {
                                            group.push((j, batch, split, position));
                                        }
                                        Ok(other) => {
                                            after = Some(other);
                                            break;
                                        }
                                        Err(_) => break,
                                    }
                                }
                                // Watermarks observe each batch in order: a row is judged late
                                // as with one thread, so the windows receive the same rows.
                                let mut observed = Vec::with_capacity(group.len());
                                for (j, batch, split, position) in group {
                                    metrics.rows_in.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                                    let batch = trackers[j].observe(batch, split)?;
                                    observed.push((j, batch, position));
                                }
                                let sink_rows = stage0::run(&mut flows, &forks, &observed, &task_ctx)?;
                                for ((j, _, position), outs) in observed.into_iter().zip(sink_rows) {
                                    for (f, out) in outs {
                                        write_flow(&mut flows[f], &mut sinks, out, &metrics, &stop).await?;
                                    }
                                    if position.is_some() {
                                        positions[j] = position;
                                    }
                                }
                                if let Some((j, event)) = after {
                                    control(&mut trackers[j], event)?;
                                }
                            }
                            event => control(&mut trackers[i], event)?,
                        }
                    }
                    _ = tick.tick() => {}
                }
                advance_all(&mut flows, &mut sinks, &mut trackers, &task_ctx, &metrics, &stop).await?;
                let late: u64 = trackers.iter().map(|t| t.late_rows).sum();
                let ahead: u64 = trackers.iter().map(|t| t.ahead_rows).sum();
                metrics.ahead_rows.store(ahead, Ordering::Relaxed);
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
        let summary = |completed| RunSummary {
            metrics: metrics.snapshot(),
            elapsed: started.elapsed(),
            completed,
        };
        let completed = match result {
            Ok(c) => c,
            // A sink that was down when the stop came was abandoned: the run stops without a
            // last checkpoint, and resumes from the previous one.
            Err(Error::Stopped(why)) if stop.is_stopping() => {
                tracing::warn!(pipeline = %config.name, "stopped without a last checkpoint: {why}");
                return Ok(summary(false));
            }
            Err(e) => return Err(e),
        };
        if let Some(c) = ck.as_mut() {
            let r = c
                .take(
                    &source_names,
                    &trackers,
                    &positions,
                    &mut flows,
                    &mut sinks,
                    &metrics,
                    &stop,
                    true,
                )
                .await;
            match r {
                Ok(()) => {}
                // A sink abandoned at the stop (down and retrying): the previous checkpoint
                // stays in force. A checkpoint store that fails is an error, as ever.
                Err(Error::Stopped(why)) if stop.is_stopping() => {
                    tracing::warn!(
                        pipeline = %config.name,
                        "stopped without a last checkpoint (the previous one stays in force): {why}"
                    );
                    return Ok(summary(false));
                }
                Err(e) => return Err(e),
            }
        }
        for s in sinks.iter_mut() {
            let status = s.sink.status();
            let r = guarded(&stop, status.as_deref(), &s.name, s.sink.flush()).await;
            match r {
                Ok(()) => {}
                Err(Error::Stopped(why)) if stop.is_stopping() => {
                    tracing::warn!(pipeline = %config.name, sink = %s.name, "not flushed at stop: {why}");
                }
                Err(e) => return Err(sink_error(&s.name, e)),
            }
        }
        Ok(summary(completed))
    }
}

/// What a source's watermark tracker learns from an event other than rows.
fn control(tracker: &mut WatermarkTracker, event: SourceEvent) -> Result<()> {
    match event {
        SourceEvent::Heartbeat { event_time_ns } => tracker.heartbeat(event_time_ns),
        SourceEvent::Splits(ids) => tracker.announce(&ids),
        SourceEvent::End => tracker.end(),
        SourceEvent::Batch { .. } => {
            return Err(Error::plan("internal: rows taken for a control event"));
        }
    }
    Ok(())
}

/// A sink's error, named after it (a stop stays a stop).
fn sink_error(name: &str, e: Error) -> Error {
    match e {
        Error::Stopped(_) => e,
        e => Error::connector(name, e),
    }
}

/// Runs a sink call. Once a stop is asked for, the call gets [`STOP_GRACE`] to finish, or none
/// at all when the sink is degraded (failing and retrying) or the run is aborted: then it is
/// abandoned with [`Error::Stopped`].
async fn guarded<T>(
    stop: &StopHandle,
    status: Option<&SinkStatus>,
    name: &str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::pin!(call);
    tokio::select! {
        biased;
        r = &mut call => return r,
        _ = stop.stopping() => {}
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    loop {
        let degraded = status.is_some_and(|s| s.degraded.load(Ordering::Relaxed));
        if stop.is_aborted() || degraded || tokio::time::Instant::now() >= deadline {
            return Err(Error::Stopped(format!(
                "sink '{name}' was abandoned{}",
                if degraded {
                    " while it was failing and retrying"
                } else {
                    ""
                }
            )));
        }
        tokio::select! {
            biased;
            r = &mut call => return r,
            _ = stop.aborted() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
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
        stop: &StopHandle,
        last: bool,
    ) -> Result<()> {
        let started = Instant::now();
        let epoch = self.epoch + 1;
        let r = self
            .try_take(epoch, source_names, trackers, positions, flows, sinks, stop)
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
                    let status = s.sink.status();
                    let r = guarded(stop, status.as_deref(), &s.name, s.sink.commit(epoch)).await;
                    if let Err(e) = r {
                        tracing::warn!(sink = %s.name, epoch, "commit failed, retried later: {e}");
                        if last {
                            return Err(sink_error(&s.name, e));
                        }
                    }
                }
                if let Err(e) = self.store.prune(epoch, self.retain).await {
                    tracing::warn!(pipeline = %self.pipeline, "cannot delete old checkpoints: {e}");
                }
                Ok(())
            }
            Err(e @ Error::Stopped(_)) => Err(e),
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

    #[allow(clippy::too_many_arguments)]
    async fn try_take(
        &mut self,
        epoch: u64,
        source_names: &[String],
        trackers: &[WatermarkTracker],
        positions: &[Option<Position>],
        flows: &mut [Flow],
        sinks: &mut [SinkSlot],
        stop: &StopHandle,
    ) -> Result<usize> {
        let mut sink_states = Vec::with_capacity(sinks.len());
        for s in sinks.iter_mut() {
            let status = s.sink.status();
            let state = guarded(stop, status.as_deref(), &s.name, s.sink.precommit(epoch))
                .await
                .map_err(|e| sink_error(&s.name, e))?;
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
    stop: &StopHandle,
) -> Result<()> {
    let status = sink.sink.status();
    for b in batches {
        metrics
            .rows_out
            .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        guarded(stop, status.as_deref(), &sink.name, sink.sink.write(b))
            .await
            .map_err(|e| sink_error(&sink.name, e))?;
    }
    Ok(())
}

/// Writes a flow's rows to each of its sinks.
async fn write_flow(
    flow: &mut Flow,
    sinks: &mut [SinkSlot],
    out: Vec<RecordBatch>,
    metrics: &PipelineMetrics,
    stop: &StopHandle,
) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    flow.count_sinks(&out);
    for &s in &flow.sinks {
        write(&mut sinks[s], out.clone(), metrics, stop).await?;
    }
    Ok(())
}

async fn advance_all(
    flows: &mut [Flow],
    sinks: &mut [SinkSlot],
    trackers: &mut [WatermarkTracker],
    ctx: &Arc<TaskContext>,
    metrics: &PipelineMetrics,
    stop: &StopHandle,
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
        // In steps of a bounded number of window ends, each written before the next is
        // computed: a watermark that jumps far emits its windows without holding them all.
        while flow.behind(wm) {
            if stop.is_aborted() {
                return Err(Error::Stopped("aborted while emitting windows".into()));
            }
            let out = flow.advance(wm, ctx)?;
            write_flow(flow, sinks, out, metrics, stop).await?;
        }
    }
    if lowest != i64::MAX {
        metrics.watermark.store(lowest, Ordering::Relaxed);
    }
    Ok(())
}
