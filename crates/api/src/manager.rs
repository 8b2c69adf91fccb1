//! The pipelines a server runs: their definitions (persisted in the data directory, one JSON
//! file each), their runs (one task each, checkpointing under the data directory), and what
//! the API shows of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skystream_engine::checkpoint::CheckpointConfig;
use skystream_engine::connector::ConnectorRegistry;
use skystream_engine::metrics::{MetricsSnapshot, PipelineMetrics};
use skystream_engine::objstore::StoreLocation;
use skystream_engine::pipeline::{RunSummary, SinkSlot, StopHandle};
use skystream_engine::time::now_ms;
use skystream_sql::PlannedPipeline;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::sandbox::Sandbox;
use crate::tap::{Tap, TapSink};

/// How long a stop waits for the pipeline's last checkpoint before it aborts the run (sink
/// calls stuck on a service that is down give up sooner, see the engine's stop handle).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an aborted run may take to end.
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a server's pipelines.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Pipeline definitions (`pipelines/`) and checkpoints (`checkpoints/`) live here.
    pub data_dir: PathBuf,
    /// At most this many pipelines (running or not).
    pub max_pipelines: usize,
    /// See `PipelineConfig::idle_timeout`.
    pub idle_timeout: Duration,
    /// What submitted SQL may touch.
    pub sandbox: Sandbox,
    /// Memory each pipeline's operators may hold (bytes); `None`: unlimited.
    pub memory_limit: Option<usize>,
    /// See `PipelineConfig::max_event_ahead`.
    pub max_event_ahead: Option<Duration>,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("skystream-data"),
            max_pipelines: 32,
            idle_timeout: Duration::from_secs(5),
            sandbox: Sandbox::default(),
            memory_limit: Some(1 << 30),
            max_event_ahead: Some(skystream_engine::pipeline::DEFAULT_MAX_EVENT_AHEAD),
        }
    }
}

/// A pipeline as submitted, and whether it should be running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineDef {
    pub id: String,
    pub name: String,
    pub query: String,
    /// Values of the query's `${name}` placeholders.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    pub checkpoint_interval: f64,
    pub created_ms: i64,
    /// Started (and not stopped since): a restarted server resumes it.
    pub running: bool,
}

/// Where a pipeline is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PipelineState {
    /// Being planned and restored from its last checkpoint.
    Starting,
    Running,
    /// Taking its last checkpoint.
    Stopping,
    Stopped,
    /// Its sources ended and every window was emitted.
    Finished,
    /// It stopped on an error (see `error`).
    Failed,
}

/// The last stored checkpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckpointView {
    pub epoch: u64,
    /// When it was stored (ms since the Unix epoch).
    pub at_ms: i64,
    pub bytes: u64,
    pub duration_ms: f64,
}

/// Counters of one source.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceView {
    pub name: String,
    /// Records read (messages, events, lines).
    pub records: u64,
    pub malformed: u64,
    /// Records skipped by the source's filters (other collections or kinds).
    pub filtered: u64,
    /// Records behind the head of the input (Kafka consumer lag), where known.
    pub lag: Option<u64>,
}

/// Rows through one operator.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OperatorView {
    /// The flow: the sink table it writes.
    pub flow: String,
    /// `{position}:{kind}`: a DataFusion plan (`0:ProjectionExec`), a window (`1:window`) or
    /// the sink (`2:sink`).
    pub operator: String,
    pub rows_in: u64,
    pub rows_out: u64,
}

/// A running (or last run's) pipeline's counters.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct MetricsView {
    /// Rows from the sources (before late rows are dropped).
    pub rows_in: u64,
    /// Rows written to the sinks.
    pub rows_out: u64,
    /// Rows dropped because they arrived after the watermark had passed them.
    pub late_rows: u64,
    /// Rows skipped because their event time was too far ahead of the wall clock.
    pub ahead_rows: u64,
    pub windows_emitted: u64,
    pub open_panes: u64,
    /// Memory held by the window operators' state (bytes); it counts against the server's
    /// per-pipeline memory limit.
    pub state_bytes: u64,
    pub records_read: u64,
    pub malformed: u64,
    pub filtered: u64,
    /// Kafka consumer lag over every partition, where known.
    pub lag: Option<u64>,
    /// The event-time watermark, ms since the Unix epoch.
    pub watermark_ms: Option<i64>,
    /// The same, as RFC 3339 (UTC).
    pub watermark: Option<String>,
    pub checkpoints: u64,
    pub checkpoint_failures: u64,
    pub last_checkpoint: Option<CheckpointView>,
    /// The checkpoint epoch this run resumed from.
    pub restored_epoch: Option<u64>,
    /// Sinks failing and retrying right now.
    pub degraded_sinks: Vec<String>,
    pub sink_retries: u64,
    pub sources: Vec<SourceView>,
    pub operators: Vec<OperatorView>,
}

/// A pipeline as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PipelineView {
    pub id: String,
    pub name: String,
    pub query: String,
    /// Values of the query's placeholders.
    pub params: BTreeMap<String, String>,
    /// Seconds between checkpoints.
    pub checkpoint_interval: f64,
    pub state: PipelineState,
    /// Why it failed (state `failed`).
    pub error: Option<String>,
    pub created_ms: i64,
    /// When the current (or last) run started.
    pub started_ms: Option<i64>,
    /// The sink tables it writes.
    pub outputs: Vec<String>,
    pub metrics: MetricsView,
}

pub(crate) fn rfc3339_ms(ms: i64) -> Option<String> {
    arrow::temporal_conversions::timestamp_ms_to_datetime(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

impl From<MetricsSnapshot> for MetricsView {
    fn from(m: MetricsSnapshot) -> Self {
        let wm = m.watermark.map(|ns| ns.div_euclid(1_000_000));
        MetricsView {
            rows_in: m.rows_in,
            rows_out: m.rows_out,
            late_rows: m.late_rows,
            ahead_rows: m.ahead_rows,
            windows_emitted: m.windows_emitted,
            open_panes: m.open_panes,
            state_bytes: m.state_bytes,
            records_read: m.records_read,
            malformed: m.malformed,
            filtered: m.filtered,
            lag: m.lag,
            watermark_ms: wm,
            watermark: wm.and_then(rfc3339_ms),
            checkpoints: m.checkpoints,
            checkpoint_failures: m.checkpoint_failures,
            last_checkpoint: m.last_checkpoint.map(|c| CheckpointView {
                epoch: c.epoch,
                at_ms: c.at_ms,
                bytes: c.bytes,
                duration_ms: c.duration_us as f64 / 1000.0,
            }),
            restored_epoch: m.restored_epoch,
            degraded_sinks: m.degraded_sinks,
            sink_retries: m.sink_retries,
            sources: m
                .sources
                .into_iter()
                .map(|s| SourceView {
                    name: s.name,
                    records: s.records,
                    malformed: s.malformed,
                    filtered: s.filtered,
                    lag: s.lag,
                })
                .collect(),
            operators: m
                .operators
                .into_iter()
                .map(|o| OperatorView {
                    flow: o.flow,
                    operator: o.operator,
                    rows_in: o.rows_in,
                    rows_out: o.rows_out,
                })
                .collect(),
        }
    }
}

struct Slot {
    def: PipelineDef,
    state: PipelineState,
    error: Option<String>,
    started_ms: Option<i64>,
    outputs: Vec<String>,
    metrics: Arc<PipelineMetrics>,
    tap: Arc<Tap>,
    /// The current run: its stop handle and a flag set when it has ended.
    run: Option<(StopHandle, watch::Receiver<bool>)>,
    /// Runs are numbered: a run that ends after its pipeline was restarted or deleted
    /// changes nothing.
    generation: u64,
}

impl Slot {
    fn new(def: PipelineDef, state: PipelineState) -> Self {
        // A slot starting now gets the tap of the run to come; any other has no run.
        let tap = if state == PipelineState::Starting {
            Tap::default()
        } else {
            Tap::ended()
        };
        Slot {
            def,
            state,
            error: None,
            started_ms: None,
            outputs: Vec::new(),
            metrics: Arc::default(),
            tap: Arc::new(tap),
            run: None,
            generation: 0,
        }
    }

    /// The state shown: a run that has not yet restored its checkpoint and started its sinks
    /// is still `starting`.
    fn state(&self) -> PipelineState {
        if self.state == PipelineState::Running && !self.metrics.started.load(Ordering::Relaxed) {
            PipelineState::Starting
        } else {
            self.state
        }
    }

    fn view(&self) -> PipelineView {
        PipelineView {
            id: self.def.id.clone(),
            name: self.def.name.clone(),
            query: self.def.query.clone(),
            params: self.def.params.clone(),
            checkpoint_interval: self.def.checkpoint_interval,
            state: self.state(),
            error: self.error.clone(),
            created_ms: self.def.created_ms,
            started_ms: self.started_ms,
            outputs: self.outputs.clone(),
            metrics: self.metrics.snapshot().into(),
        }
    }
}

/// A new pipeline, as submitted.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPipeline {
    /// Unique; letters, digits, `-` and `_` (it names the pipeline's lake files).
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub name: String,
    /// The pipeline script (CREATE TABLE ... WITH (connector = ...), CREATE VIEW, INSERT INTO).
    pub query: String,
    /// Values of the query's `${name}` and `${name:default}` placeholders (as `skystream run
    /// --set` gives them), e.g. the shipped scripts of `sql/`.
    pub params: Option<BTreeMap<String, String>>,
    /// Seconds between checkpoints (default 10).
    #[schema(minimum = 0.1, maximum = 86400)]
    pub checkpoint_interval: Option<f64>,
}

/// What a query plans to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanSummary {
    /// The sink tables the query writes, one per INSERT INTO (or `stdout`).
    pub outputs: Vec<String>,
    /// The streaming plan: every flow's operators.
    pub plan: String,
}

/// The server's pipelines.
pub struct Manager {
    cfg: ManagerConfig,
    registry: ConnectorRegistry,
    slots: Mutex<BTreeMap<String, Slot>>,
    generations: AtomicU64,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Manager {
    pub fn new(cfg: ManagerConfig, registry: ConnectorRegistry) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(cfg.data_dir.join("pipelines"))?;
        std::fs::create_dir_all(cfg.data_dir.join("checkpoints"))?;
        Ok(Arc::new(Self {
            cfg,
            registry,
            slots: Mutex::default(),
            generations: AtomicU64::new(0),
        }))
    }

    fn def_path(&self, id: &str) -> PathBuf {
        self.cfg
            .data_dir
            .join("pipelines")
            .join(format!("{id}.json"))
    }

    fn checkpoint_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("checkpoints").join(id)
    }

    fn save(&self, def: &PipelineDef) -> ApiResult<()> {
        let path = self.def_path(&def.id);
        let tmp = path.with_extension("json.tmp");
        let data = serde_json::to_vec_pretty(def).map_err(ApiError::internal)?;
        std::fs::write(&tmp, data)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| ApiError::internal(format!("cannot save pipeline {}: {e}", def.id)))
    }

    /// Loads the saved pipelines and resumes those that were running.
    pub async fn load(self: &Arc<Self>) -> std::io::Result<usize> {
        let mut defs = Vec::new();
        for e in std::fs::read_dir(self.cfg.data_dir.join("pipelines"))? {
            let p = e?.path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_slice::<PipelineDef>(&d).map_err(|e| e.to_string()))
            {
                Ok(d) => defs.push(d),
                Err(e) => tracing::error!("skipping pipeline file {}: {e}", p.display()),
            }
        }
        defs.sort_by_key(|d| d.created_ms);
        let n = defs.len();
        for def in defs {
            let (id, running) = (def.id.clone(), def.running);
            self.insert(def, PipelineState::Stopped);
            if running && let Err(e) = self.start(&id).await {
                tracing::error!(pipeline = %id, "cannot resume: {e}");
            }
        }
        Ok(n)
    }

    fn insert(&self, def: PipelineDef, state: PipelineState) {
        self.slots
            .lock()
            .unwrap()
            .insert(def.id.clone(), Slot::new(def, state));
    }

    async fn plan(
        &self,
        query: &str,
        params: &BTreeMap<String, String>,
    ) -> ApiResult<PlannedPipeline> {
        let query =
            skystream_sql::params::substitute(query, params).map_err(ApiError::bad_request)?;
        let opts = skystream_sql::PlanOptions {
            memory_limit: self.cfg.memory_limit,
            table_check: Some(self.cfg.sandbox.table_check()),
            ..Default::default()
        };
        // On a planner thread of its own: a heavy query neither overflows this runtime's stack
        // nor holds up the requests it serves.
        skystream_sql::plan_script_isolated(query, self.registry.clone(), opts)
            .await
            .map_err(ApiError::sql)
    }

    /// Plans `query` (its placeholders filled from `params`) without running it.
    pub async fn validate(
        &self,
        query: &str,
        params: &BTreeMap<String, String>,
    ) -> ApiResult<PlanSummary> {
        let p = self.plan(query, params).await?;
        Ok(PlanSummary {
            outputs: p.outputs,
            plan: p.explain,
        })
    }

    pub fn list(&self) -> Vec<PipelineView> {
        let slots = self.slots.lock().unwrap();
        let mut v: Vec<PipelineView> = slots.values().map(Slot::view).collect();
        v.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        v
    }

    pub fn get(&self, id: &str) -> ApiResult<PipelineView> {
        self.slots
            .lock()
            .unwrap()
            .get(id)
            .map(Slot::view)
            .ok_or_else(|| ApiError::not_found(id))
    }

    pub fn tap(&self, id: &str) -> ApiResult<Arc<Tap>> {
        self.slots
            .lock()
            .unwrap()
            .get(id)
            .map(|s| s.tap.clone())
            .ok_or_else(|| ApiError::not_found(id))
    }

    /// Every pipeline's tap, oldest pipeline first, running ones first.
    pub fn taps(&self) -> Vec<(String, Arc<Tap>)> {
        let slots = self.slots.lock().unwrap();
        let mut v: Vec<(bool, i64, String, Arc<Tap>)> = slots
            .values()
            .map(|s| {
                (
                    s.state() != PipelineState::Running,
                    s.def.created_ms,
                    s.def.id.clone(),
                    s.tap.clone(),
                )
            })
            .collect();
        v.sort_by_key(|a| (a.0, a.1));
        v.into_iter().map(|(_, _, id, t)| (id, t)).collect()
    }

    /// Counts of pipelines by state, and every pipeline's counters (for `/metrics`).
    pub fn metrics(&self) -> Vec<(String, String, PipelineState, MetricsSnapshot)> {
        self.slots
            .lock()
            .unwrap()
            .values()
            .map(|s| {
                (
                    s.def.id.clone(),
                    s.def.name.clone(),
                    s.state(),
                    s.metrics.snapshot(),
                )
            })
            .collect()
    }

    /// Validates, saves and starts a new pipeline.
    pub async fn create(self: &Arc<Self>, req: NewPipeline) -> ApiResult<PipelineView> {
        if !valid_name(&req.name) {
            return Err(ApiError::bad_request(
                "name: 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        let interval = req.checkpoint_interval.unwrap_or(10.0);
        if !(interval.is_finite() && (0.1..=86_400.0).contains(&interval)) {
            return Err(ApiError::bad_request(
                "checkpoint_interval: seconds between 0.1 and 86400",
            ));
        }
        let def = {
            let mut slots = self.slots.lock().unwrap();
            if slots.values().any(|s| s.def.name == req.name) {
                return Err(ApiError::conflict(format!(
                    "a pipeline named '{}' exists",
                    req.name
                )));
            }
            if slots.len() >= self.cfg.max_pipelines {
                return Err(ApiError::conflict(format!(
                    "the server holds its maximum of {} pipelines: delete one first",
                    self.cfg.max_pipelines
                )));
            }
            let created_ms = now_ms();
            let def = PipelineDef {
                id: new_id(&req.name, created_ms),
                name: req.name,
                query: req.query,
                params: req.params.unwrap_or_default(),
                checkpoint_interval: interval,
                created_ms,
                running: true,
            };
            // Reserve the name and a place under the cap before the slow part.
            slots.insert(
                def.id.clone(),
                Slot::new(def.clone(), PipelineState::Starting),
            );
            def
        };
        // A query that does not plan (or a definition that cannot be saved) leaves nothing.
        let planned = match self.prepare(&def).await {
            Ok(p) => self.save(&def).map(|()| p),
            Err(e) => Err(e),
        };
        let planned = match planned {
            Ok(p) => p,
            Err(e) => {
                self.slots.lock().unwrap().remove(&def.id);
                return Err(e);
            }
        };
        self.spawn_run(&def.id, planned)?;
        self.get(&def.id)
    }

    /// Starts a stopped (finished, failed) pipeline; it resumes from its last checkpoint. If it
    /// no longer plans (a connector's options became invalid), it is `failed` with the error.
    pub async fn start(self: &Arc<Self>, id: &str) -> ApiResult<PipelineView> {
        let def = {
            let mut slots = self.slots.lock().unwrap();
            let slot = slots.get_mut(id).ok_or_else(|| ApiError::not_found(id))?;
            if matches!(
                slot.state,
                PipelineState::Starting | PipelineState::Running | PipelineState::Stopping
            ) {
                return Err(ApiError::conflict(format!(
                    "pipeline '{id}' is {}",
                    state_name(slot.state)
                )));
            }
            slot.def.running = true;
            self.save(&slot.def)?;
            slot.state = PipelineState::Starting;
            slot.error = None;
            // The output of the run to come.
            slot.tap = Arc::default();
            slot.def.clone()
        };
        match self.prepare(&def).await {
            Ok(planned) => self.spawn_run(id, planned)?,
            Err(e) => self.set_failed(id, &e.body.error),
        }
        self.get(id)
    }

    /// Plans a pipeline's query with its name, idle timeout and checkpoint location.
    async fn prepare(&self, def: &PipelineDef) -> ApiResult<PlannedPipeline> {
        let mut planned = self.plan(&def.query, &def.params).await?;
        let p = &mut planned.pipeline;
        p.config.name = def.name.clone();
        p.config.idle_timeout = self.cfg.idle_timeout;
        p.config.max_event_ahead = self.cfg.max_event_ahead;
        let dir = self.checkpoint_dir(&def.id);
        let loc = StoreLocation::open(&dir.to_string_lossy(), &Default::default())
            .map_err(|e| ApiError::internal(format!("checkpoint directory: {e}")))?;
        let mut c = CheckpointConfig::new(loc);
        c.interval = Duration::from_secs_f64(def.checkpoint_interval);
        p.checkpoint = Some(c);
        Ok(planned)
    }

    /// Runs a planned pipeline `id` on its own task, its sinks tapped for the API.
    fn spawn_run(self: &Arc<Self>, id: &str, planned: PlannedPipeline) -> ApiResult<()> {
        let PlannedPipeline {
            mut pipeline,
            outputs,
            ..
        } = planned;
        let Some(tap) = self.slots.lock().unwrap().get(id).map(|s| s.tap.clone()) else {
            return Err(ApiError::not_found(id));
        };
        pipeline.sinks = std::mem::take(&mut pipeline.sinks)
            .into_iter()
            .map(|s| SinkSlot {
                sink: Box::new(TapSink::new(s.name.clone(), s.sink, tap.clone())),
                name: s.name,
            })
            .collect();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let (done_tx, done_rx) = watch::channel(false);
        let metrics = pipeline.metrics();
        // Its own thread and runtime: a pipeline's work never holds up the API's runtime.
        let running = pipeline.spawn().map_err(|e| {
            ApiError::internal(format!("cannot start a thread for pipeline {id}: {e}"))
        })?;
        {
            let mut slots = self.slots.lock().unwrap();
            let Some(slot) = slots.get_mut(id) else {
                return Err(ApiError::not_found(id));
            };
            slot.state = PipelineState::Running;
            slot.error = None;
            slot.started_ms = Some(now_ms());
            slot.outputs = outputs;
            slot.metrics = metrics;
            slot.run = Some((running.stop.clone(), done_rx));
            slot.generation = generation;
        }
        let mgr = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let r = running.wait().await;
            mgr.ended(&id, generation, r);
            let _ = done_tx.send(true);
        });
        Ok(())
    }

    fn set_failed(&self, id: &str, error: &str) {
        tracing::warn!(pipeline = %id, "cannot start: {error}");
        if let Some(s) = self.slots.lock().unwrap().get_mut(id) {
            s.state = PipelineState::Failed;
            s.error = Some(error.to_string());
            s.run = None;
            s.tap.end();
        }
    }

    /// A run ended: on its own (finished), stopped, or with an error.
    fn ended(&self, id: &str, generation: u64, r: skystream_engine::Result<RunSummary>) {
        let mut slots = self.slots.lock().unwrap();
        let Some(slot) = slots.get_mut(id) else {
            return;
        };
        if slot.generation != generation {
            return;
        }
        slot.run = None;
        match r {
            Ok(s) if s.completed => {
                slot.state = PipelineState::Finished;
                slot.def.running = false;
                if let Err(e) = self.save(&slot.def) {
                    tracing::warn!(pipeline = %id, "{e}");
                }
            }
            Ok(_) => slot.state = PipelineState::Stopped,
            // Aborted at a stop: it resumes from its last checkpoint.
            Err(skystream_engine::Error::Stopped(why)) => {
                tracing::warn!(pipeline = %id, "stopped without a last checkpoint: {why}");
                slot.state = PipelineState::Stopped;
            }
            Err(e) => {
                tracing::warn!(pipeline = %id, "failed: {e}");
                slot.state = PipelineState::Failed;
                slot.error = Some(e.to_string());
            }
        }
        // `/output` streams end, telling the state just set.
        slot.tap.end();
    }

    /// Stops a running pipeline after its last checkpoint. `keep_running`: it resumes when the
    /// server restarts (a server shutdown), else it stays stopped.
    async fn halt(&self, id: &str, keep_running: bool) -> ApiResult<()> {
        let done = {
            let mut slots = self.slots.lock().unwrap();
            let slot = slots.get_mut(id).ok_or_else(|| ApiError::not_found(id))?;
            if !keep_running && slot.def.running {
                slot.def.running = false;
                self.save(&slot.def)?;
            }
            let Some((stop, done)) = slot.run.clone() else {
                return Err(ApiError::conflict(format!(
                    "pipeline '{id}' is {}",
                    state_name(slot.state)
                )));
            };
            slot.state = PipelineState::Stopping;
            stop.stop();
            (stop, done)
        };
        let (stop, mut done) = done;
        if tokio::time::timeout(STOP_TIMEOUT, done.wait_for(|d| *d))
            .await
            .is_ok()
        {
            return Ok(());
        }
        // The last checkpoint did not come: give it up (the previous one stays in force).
        tracing::warn!(pipeline = %id, "no last checkpoint within {STOP_TIMEOUT:?}: aborting");
        stop.abort();
        match tokio::time::timeout(ABORT_TIMEOUT, done.wait_for(|d| *d)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(ApiError::internal(format!(
                "pipeline '{id}' did not stop within {:?}",
                STOP_TIMEOUT + ABORT_TIMEOUT
            ))),
        }
    }

    pub async fn stop(&self, id: &str) -> ApiResult<PipelineView> {
        self.halt(id, false).await?;
        self.get(id)
    }

    /// Stops (if running) and forgets a pipeline: its definition and checkpoints are deleted.
    pub async fn delete(&self, id: &str) -> ApiResult<()> {
        match self.halt(id, false).await {
            Ok(()) => {}
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => {}
            Err(e) => return Err(e),
        }
        match self.slots.lock().unwrap().remove(id) {
            Some(s) => s.tap.end(),
            None => return Err(ApiError::not_found(id)),
        }
        let _ = std::fs::remove_file(self.def_path(id));
        let _ = std::fs::remove_dir_all(self.checkpoint_dir(id));
        Ok(())
    }

    /// Stops every running pipeline with a last checkpoint; they resume at the next start.
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self
            .slots
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.run.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        // All at once: one pipeline slow to take its checkpoint does not hold up the others.
        let halts = ids.iter().map(|id| async move {
            if let Err(e) = self.halt(id, true).await {
                tracing::warn!(pipeline = %id, "stopping: {e}");
            }
        });
        futures::future::join_all(halts).await;
    }
}

fn state_name(s: PipelineState) -> &'static str {
    match s {
        PipelineState::Starting => "starting",
        PipelineState::Running => "running",
        PipelineState::Stopping => "stopping",
        PipelineState::Stopped => "stopped",
        PipelineState::Finished => "finished",
        PipelineState::Failed => "failed",
    }
}

/// A short id, unique on this server (name, time and a process-wide counter hashed).
fn new_id(name: &str, ms: i64) -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(name.as_bytes());
    h.write_i64(ms);
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    format!("p{:011x}", h.finish() >> 20)
}
