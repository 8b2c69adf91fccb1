//! `skystream serve`: an HTTP API to submit, run and watch SQL pipelines.
//!
//! Routes (JSON everywhere; errors are `{error, line?, column?}`):
//! `POST /api/v1/pipelines`, `GET /api/v1/pipelines`, `GET|DELETE /api/v1/pipelines/{id}`,
//! `POST /api/v1/pipelines/{id}/stop|start`, `GET /api/v1/pipelines/{id}/output` (Server-Sent
//! Events), `POST /api/v1/validate`, `GET /api/v1/trends`, `GET /api/v1/openapi.json`,
//! `GET /metrics` (Prometheus), `GET /healthz`, `GET /readyz`.

pub mod error;
mod handlers;
pub mod manager;
mod prom;
pub mod sandbox;
pub mod tap;

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use skystream_engine::connector::ConnectorRegistry;
use skystream_netguard::{AuthLimiter, BusyGuard, ConnTable};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use manager::{Manager, ManagerConfig};
pub use sandbox::Sandbox;

use crate::error::ApiError;

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub manager: ManagerConfig,
    /// When set, every endpoint but `/healthz` and `/readyz` needs `Authorization: Bearer ...`.
    pub token: Option<String>,
    /// Largest request body accepted (bytes).
    pub body_limit: usize,
    /// Where `/api/v1/trends` reads rankings: a Redis URL and the key prefix of a `ranking`
    /// layout sink. `None`: from the pipelines' results in the server.
    pub trends_redis: Option<(String, String)>,
    /// Connections open at once; past it the oldest idle one is closed (see
    /// `skystream_netguard::ConnTable`).
    pub max_connections: usize,
    /// A client must send a request's headers within this.
    pub header_timeout: Duration,
    /// A connection without a request in progress is closed after this.
    pub idle_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            manager: ManagerConfig::default(),
            token: None,
            body_limit: 256 << 10,
            trends_redis: None,
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    pub manager: Arc<Manager>,
    pub config: ApiConfig,
    pub ready: AtomicBool,
    /// The connection `/trends` reads Redis through (dropped after a failure).
    redis: std::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// Set when the server shuts down: open event streams end.
    closing: tokio::sync::watch::Sender<bool>,
    /// Failed bearer-token checks, per client address.
    auth_failures: AuthLimiter,
}

/// The client's address, put into every request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

pub type Shared = Arc<AppState>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "skystream",
        description = "Submit, run and watch streaming SQL pipelines over the Bluesky firehose."
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The application: routes, the OpenAPI document, auth and limits.
pub fn app(state: Shared) -> Router {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(handlers::create_pipeline, handlers::list_pipelines))
        .routes(routes!(handlers::get_pipeline, handlers::delete_pipeline))
        .routes(routes!(handlers::stop_pipeline))
        .routes(routes!(handlers::start_pipeline))
        .routes(routes!(handlers::pipeline_output))
        .routes(routes!(handlers::validate))
        .routes(routes!(handlers::trends))
        .routes(routes!(handlers::metrics))
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::readyz))
        .split_for_parts();
    if state.config.token.is_some() {
        // Every operation but the health checks needs the token.
        for (path, item) in doc.paths.paths.iter_mut() {
            if path == "/healthz" || path == "/readyz" {
                continue;
            }
            for op in operations(item) {
                op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
                op.responses.responses.insert(
                    "401".into(),
                    utoipa::openapi::ResponseBuilder::new()
                        .description("Missing or wrong bearer token")
                        .content(
                            "application/json",
                            utoipa::openapi::ContentBuilder::new()
                                .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                                .build(),
                        )
                        .into(),
                );
            }
        }
    }
    let doc = Arc::new(doc);
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .with_state(state)
}

fn operations(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Bearer-token check (constant time) for everything but the health endpoints.
async fn auth(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let Some(token) = &state.config.token else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    // An address locked out after failed tries is not even checked until the lockout ends.
    if let Some(ip) = peer
        && let Err(wait) = state.auth_failures.check(ip)
    {
        return too_many_failures(wait);
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        if let Some(ip) = peer {
            state.auth_failures.succeeded(ip);
        }
        next.run(req).await
    } else {
        if let Some(ip) = peer
            && let Some(wait) = state.auth_failures.failed(ip)
        {
            return too_many_failures(wait);
        }
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer ...)",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
        r
    }
}

/// 429 with `Retry-After`, for an address locked out after failed token checks.
fn too_many_failures(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many wrong tokens from this address: retry in {secs} s"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Shared,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A response body that keeps its connection marked busy until it has been sent (or dropped):
/// an event stream being written is not an idle connection.
struct Guarded {
    body: axum::body::Body,
    _busy: BusyGuard,
}

impl http_body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves `app` on `listener`: connections capped (the oldest idle one closed past the cap),
/// headers due within the header timeout, idle connections closed, until `shutdown`.
async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    config: ApiConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let table = ConnTable::new(config.max_connections);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        while tasks.try_join_next().is_some() {}
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!("HTTP API: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match table.admit(peer.ip()) {
            Ok(a) => a,
            Err(_) => {
                tracing::warn!(%peer, "HTTP API: every connection is busy; refusing one");
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let app = app.clone();
        let (header_timeout, idle_timeout) = (config.header_timeout, config.idle_timeout);
        let mut stopping = shutdown.clone();
        tasks.spawn(async move {
            let conn = admitted.conn.clone();
            let ip = peer.ip();
            let service = hyper::service::service_fn(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    let busy = conn.busy();
                    req.extensions_mut().insert(Peer(ip));
                    let app = app.clone();
                    async move {
                        let req = req.map(axum::body::Body::new);
                        let resp = tower::ServiceExt::oneshot(app, req).await?;
                        Ok::<_, std::convert::Infallible>(
                            resp.map(|body| Guarded { body, _busy: busy }),
                        )
                    }
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .max_buf_size(64 << 10);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(socket), service);
            tokio::pin!(connection);
            let conn = admitted.conn.clone();
            tokio::select! {
                r = connection.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, "HTTP connection: {e}");
                    }
                    return;
                }
                _ = conn.closing(idle_timeout) => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
            // Idle too long, evicted, or the server stops: finish the request in progress.
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
            drop(admitted);
        });
    }
    table.close_all();
    while tokio::time::timeout(Duration::from_secs(6), tasks.join_next())
        .await
        .ok()
        .flatten()
        .is_some()
    {}
    Ok(())
}

impl Server {
    /// Binds `addr`, loads the saved pipelines (resuming those that were running) and serves.
    pub async fn start(
        addr: &str,
        config: ApiConfig,
        registry: ConnectorRegistry,
    ) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let manager = Manager::new(config.manager.clone(), registry)?;
        let state = Arc::new(AppState {
            manager: manager.clone(),
            config: config.clone(),
            ready: AtomicBool::new(false),
            redis: std::sync::Mutex::new(None),
            closing: tokio::sync::watch::channel(false).0,
            auth_failures: AuthLimiter::default(),
        });
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let app = app(state.clone());
        let task = tokio::spawn(serve(listener, app, config, rx));
        let loaded = manager.load().await?;
        state.ready.store(true, Ordering::SeqCst);
        tracing::info!(%addr, pipelines = loaded, "skystream API listening");
        Ok(Server {
            addr,
            state,
            shutdown,
            task,
        })
    }

    /// Stops every pipeline with a last checkpoint (they resume at the next start), then the
    /// server.
    pub async fn stop(self) -> std::io::Result<()> {
        self.state.ready.store(false, Ordering::SeqCst);
        self.state.manager.shutdown().await;
        self.state.closing.send_replace(true);
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}
