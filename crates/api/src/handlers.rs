//! The endpoints. Each is annotated for the OpenAPI document (`/api/v1/openapi.json`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::Shared;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::manager::{NewPipeline, PipelineView, PlanSummary, rfc3339_ms};

fn body<T>(r: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match r {
        Ok(Json(v)) => Ok(v),
        Err(e) => {
            let status = match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            Err(ApiError::new(status, e.body_text()))
        }
    }
}

fn path_id(p: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// Submit a pipeline: it is validated and planned, saved, and started.
#[utoipa::path(
    post,
    path = "/api/v1/pipelines",
    tag = "pipelines",
    request_body = NewPipeline,
    responses(
        (status = 201, description = "Created and started", body = PipelineView),
        (status = 400, description = "Invalid request or query", body = ErrorBody),
        (status = 409, description = "Name taken, or the pipeline cap is reached", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    )
)]
pub async fn create_pipeline(
    State(s): State<Shared>,
    req: Result<Json<NewPipeline>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<PipelineView>)> {
    let req = body(req)?;
    let v = s.manager.create(req).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Every pipeline with its state and counters.
#[utoipa::path(
    get,
    path = "/api/v1/pipelines",
    tag = "pipelines",
    responses((status = 200, description = "The pipelines, oldest first", body = Vec<PipelineView>))
)]
pub async fn list_pipelines(State(s): State<Shared>) -> Json<Vec<PipelineView>> {
    Json(s.manager.list())
}

/// One pipeline: state (with its error if it failed), per-operator rows, watermark, late
/// rows, lag and the last checkpoint.
#[utoipa::path(
    get,
    path = "/api/v1/pipelines/{id}",
    tag = "pipelines",
    params(("id" = String, Path, description = "Pipeline id")),
    responses(
        (status = 200, description = "The pipeline", body = PipelineView),
        (status = 404, description = "No such pipeline", body = ErrorBody),
    )
)]
pub async fn get_pipeline(
    State(s): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<PipelineView>> {
    Ok(Json(s.manager.get(&path_id(id)?)?))
}

/// Stop (if running) and delete a pipeline, with its checkpoints.
#[utoipa::path(
    delete,
    path = "/api/v1/pipelines/{id}",
    tag = "pipelines",
    params(("id" = String, Path, description = "Pipeline id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such pipeline", body = ErrorBody),
        (status = 500, description = "It did not stop in time", body = ErrorBody),
    )
)]
pub async fn delete_pipeline(
    State(s): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    s.manager.delete(&path_id(id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stop a running pipeline gracefully: it takes a last checkpoint.
#[utoipa::path(
    post,
    path = "/api/v1/pipelines/{id}/stop",
    tag = "pipelines",
    params(("id" = String, Path, description = "Pipeline id")),
    responses(
        (status = 200, description = "Stopped", body = PipelineView),
        (status = 404, description = "No such pipeline", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody),
        (status = 500, description = "It did not stop in time", body = ErrorBody),
    )
)]
pub async fn stop_pipeline(
    State(s): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<PipelineView>> {
    Ok(Json(s.manager.stop(&path_id(id)?).await?))
}

/// Start a stopped, finished or failed pipeline: it resumes from its last checkpoint.
#[utoipa::path(
    post,
    path = "/api/v1/pipelines/{id}/start",
    tag = "pipelines",
    params(("id" = String, Path, description = "Pipeline id")),
    responses(
        (status = 200, description = "Started (state `running`, or `failed` with the error)", body = PipelineView),
        (status = 404, description = "No such pipeline", body = ErrorBody),
        (status = 409, description = "Already running", body = ErrorBody),
    )
)]
pub async fn start_pipeline(
    State(s): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<PipelineView>> {
    Ok(Json(s.manager.start(&path_id(id)?).await?))
}

/// Result rows as they are written, as Server-Sent Events: one `rows` event per batch, its data
/// `{"table": ..., "rows": [{...}, ...]}`; a `lagged` event when the client fell behind and
/// rows were skipped. When the run ends (stopped, finished, failed), or if the pipeline is not
/// running, an `end` event `{"state": ...}` closes the stream.
#[utoipa::path(
    get,
    path = "/api/v1/pipelines/{id}/output",
    tag = "pipelines",
    params(("id" = String, Path, description = "Pipeline id")),
    responses(
        (status = 200, description = "An event stream: each event as described", content_type = "text/event-stream", body = OutputEvent),
        (status = 404, description = "No such pipeline", body = ErrorBody),
    )
)]
pub async fn pipeline_output(
    State(s): State<Shared>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let id = path_id(id)?;
    let tap = s.manager.tap(&id)?;
    let rx = tap.subscribe();
    let ended = tap.watch_end();
    drop(tap);
    let closing = s.closing.subscribe();
    enum Step {
        Rows(Result<Arc<String>, RecvError>),
        /// The run has ended: what is buffered, then `end`.
        Drain,
        Closed,
    }
    let rows = |data: Arc<String>| OutputEventKind::Rows.event().data(data.as_str());
    let lagged = |n: u64| {
        OutputEventKind::Lagged
            .event()
            .data(format!("{{\"skipped_batches\":{n}}}"))
    };
    let state = (rx, closing, ended, s.clone(), id, false);
    let stream = futures::stream::unfold(
        state,
        move |(mut rx, mut closing, mut ended, s, id, done)| async move {
            if done {
                return None;
            }
            let step = if *ended.borrow() {
                Step::Drain
            } else {
                tokio::select! {
                    m = rx.recv() => Step::Rows(m),
                    _ = closing.wait_for(|c| *c) => Step::Closed,
                    // (A dropped tap, its pipeline deleted, has ended too.)
                    _ = ended.wait_for(|e| *e) => Step::Drain,
                }
            };
            let (ev, done) = match step {
                Step::Closed | Step::Rows(Err(RecvError::Closed)) => return None,
                Step::Rows(Ok(data)) => (rows(data), false),
                Step::Rows(Err(RecvError::Lagged(n))) => (lagged(n), false),
                Step::Drain => match rx.try_recv() {
                    Ok(data) => (rows(data), false),
                    Err(TryRecvError::Lagged(n)) => (lagged(n), false),
                    Err(_) => {
                        let state = match s.manager.get(&id) {
                            Ok(v) => serde_json::to_string(&v.state).unwrap_or_default(),
                            Err(_) => "\"deleted\"".into(),
                        };
                        let end = OutputEventKind::End
                            .event()
                            .data(format!("{{\"state\":{state}}}"));
                        (end, true)
                    }
                },
            };
            Some((Ok(ev), (rx, closing, ended, s, id, done)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The kinds of `/output` events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputEventKind {
    Rows,
    Lagged,
    End,
}

impl OutputEventKind {
    fn event(&self) -> Event {
        Event::default().event(match self {
            OutputEventKind::Rows => "rows",
            OutputEventKind::Lagged => "lagged",
            OutputEventKind::End => "end",
        })
    }
}

/// One Server-Sent Event of `/output`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutputEvent {
    pub event: OutputEventKind,
    /// JSON: `{"table": ..., "rows": [{...}, ...]}` (rows), `{"skipped_batches": n}` (lagged),
    /// `{"state": ...}` (end: the pipeline's state as the stream closes).
    pub data: String,
}

/// A query to check.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    pub query: String,
    /// Values of the query's `${name}` placeholders.
    pub params: Option<std::collections::BTreeMap<String, String>>,
}

/// Plan a query without running it: its outputs and streaming plan, or the error with its
/// position.
#[utoipa::path(
    post,
    path = "/api/v1/validate",
    tag = "pipelines",
    request_body = ValidateRequest,
    responses(
        (status = 200, description = "The query plans", body = PlanSummary),
        (status = 400, description = "Invalid query", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    )
)]
pub async fn validate(
    State(s): State<Shared>,
    req: Result<Json<ValidateRequest>, JsonRejection>,
) -> ApiResult<Json<PlanSummary>> {
    let req = body(req)?;
    Ok(Json(
        s.manager
            .validate(&req.query, &req.params.unwrap_or_default())
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrendsQuery {
    /// How many terms (default 10, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The window, by its end: ms since the Unix epoch (default: the newest).
    pub window: Option<i64>,
    /// The pipeline whose results to read (without Redis; default: the oldest running one
    /// with trend-shaped results: a window end, a term and a score).
    pub pipeline: Option<String>,
}

/// One ranked term.
#[derive(Debug, Serialize, ToSchema)]
pub struct Trend {
    pub rank: u32,
    pub term: String,
    pub score: f64,
}

/// The top terms of one window.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrendsResponse {
    /// `redis` or `engine`.
    pub source: String,
    /// The window's end, ms since the Unix epoch (absent when nothing was ranked yet).
    pub window_end_ms: Option<i64>,
    pub window_end: Option<String>,
    pub trends: Vec<Trend>,
}

/// Current top trends: from Redis when the server is configured with it (the `latest` pointer
/// and sorted sets of a `ranking` sink), else from the pipelines' results.
#[utoipa::path(
    get,
    path = "/api/v1/trends",
    tag = "trends",
    params(TrendsQuery),
    responses(
        (status = 200, description = "The ranking", body = TrendsResponse),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 404, description = "No such pipeline", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    )
)]
pub async fn trends(
    State(s): State<Shared>,
    q: Result<Query<TrendsQuery>, QueryRejection>,
) -> ApiResult<Json<TrendsResponse>> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(10);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: 1 to 1000"));
    }
    let (source, window, terms) = match &s.config.trends_redis {
        Some((url, key)) => {
            let (w, t) = redis_trends(&s, url, key, q.window, limit).await?;
            ("redis", w, t)
        }
        None => {
            let taps = match &q.pipeline {
                Some(id) => vec![(id.clone(), s.manager.tap(id)?)],
                None => s.manager.taps(),
            };
            let found = taps.iter().find_map(|(_, t)| t.trends(q.window));
            match found {
                Some((w, tw)) => (
                    "engine",
                    Some(w),
                    tw.terms.into_iter().take(limit as usize).collect(),
                ),
                None => ("engine", None, Vec::new()),
            }
        }
    };
    Ok(Json(TrendsResponse {
        source: source.into(),
        window_end_ms: window,
        window_end: window.and_then(rfc3339_ms),
        trends: terms
            .into_iter()
            .enumerate()
            .map(|(i, (term, score))| Trend {
                rank: i as u32 + 1,
                term,
                score,
            })
            .collect(),
    }))
}

type Ranked = (Option<i64>, Vec<(String, f64)>);

/// How long `/trends` waits for Redis (connecting, then reading).
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

async fn redis_trends(
    s: &Shared,
    url: &str,
    key: &str,
    window: Option<i64>,
    limit: u32,
) -> ApiResult<Ranked> {
    let unavailable = |e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Redis at {url}: {e}"),
        )
    };
    let cached = s.redis.lock().unwrap().clone();
    let mut conn = match cached {
        Some(c) => c,
        None => {
            let client = redis::Client::open(url).map_err(|e| unavailable(&e))?;
            let c = tokio::time::timeout(REDIS_TIMEOUT, client.get_multiplexed_async_connection())
                .await
                .map_err(|_| unavailable(&"connection timed out"))?
                .map_err(|e| unavailable(&e))?;
            *s.redis.lock().unwrap() = Some(c.clone());
            c
        }
    };
    match tokio::time::timeout(REDIS_TIMEOUT, read_ranking(&mut conn, key, window, limit)).await {
        Ok(Ok(r)) => Ok(r),
        failed => {
            // A broken connection is not reused: the next request connects again.
            *s.redis.lock().unwrap() = None;
            Err(match failed {
                Ok(Err(e)) => unavailable(&e),
                _ => unavailable(&"no answer"),
            })
        }
    }
}

/// The window `window` (default: the `latest` pointer) of a `ranking` sink's sorted sets.
async fn read_ranking(
    c: &mut redis::aio::MultiplexedConnection,
    key: &str,
    window: Option<i64>,
    limit: u32,
) -> redis::RedisResult<Ranked> {
    let window = match window {
        Some(w) => Some(w),
        None => redis::cmd("GET")
            .arg(format!("{key}:latest"))
            .query_async::<Option<String>>(c)
            .await?
            .and_then(|v| v.parse().ok()),
    };
    let Some(w) = window else {
        return Ok((None, Vec::new()));
    };
    let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(format!("{key}:{w}"))
        .arg(0)
        .arg(limit as i64 - 1)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(c)
        .await?;
    Ok((Some(w), members))
}

/// Prometheus text: pipelines by state, and every pipeline's counters.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(s): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::prom::render(&s.manager),
    )
        .into_response()
}

/// Health of the server process.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: the server answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health))
)]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: saved pipelines are loaded and resumed.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Starting or shutting down", body = ErrorBody),
    )
)]
pub async fn readyz(State(s): State<Shared>) -> ApiResult<Json<Health>> {
    if s.ready.load(Ordering::SeqCst) {
        Ok(Json(Health {
            status: "ready".into(),
        }))
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: loading pipelines or shutting down",
        ))
    }
}
