//! skystream's SQL endpoint: results in the lake and the engine's live state, queried over the
//! PostgreSQL wire protocol, so that Superset, psql, Grafana or any BI tool connects with a plain
//! `postgresql://` URL — the way streaming databases (RisingWave, Materialize) serve their views.
//!
//! The wire protocol, pg_catalog and the Postgres-flavoured SQL come from `datafusion-postgres`
//! (pgwire + DataFusion); this crate adds what a read-only results server needs around it:
//!
//! - **tables**: schema `lake` (the default) holds one table per lake dataset (a directory of
//!   Parquet files written by the `lake` sink, Hive-partitioned), re-listed so newly committed
//!   files and datasets show up; schema `live` holds tables over in-memory engine state (the
//!   current trends, the pipelines) supplied by the caller;
//! - **compatibility** for SQLAlchemy's postgresql dialect and Superset: `version()` in the
//!   `PostgreSQL N.N ...` form, `pg_type_is_visible`, `obj_description`, `col_description`, and
//!   primary-key/index reflection answered with no rows (there are none);
//! - **guards**: only reads (`SELECT`, `EXPLAIN`, `SHOW`, `SET` of an allow-list of session
//!   variables, transactions and cursors); any write or DDL fails with SQLSTATE 25006;
//!   SCRAM-SHA-256 logins, failed ones locked out per address; a session per connection;
//!   statements checked against shape limits (54001), planned and run off the connections'
//!   runtime under a timeout that aborts them (57014), their results charged to a memory pool
//!   shared by the server's queries (53200); connections capped, sizes and idle time bounded
//!   before pgwire reads them (see [`conn`]).

mod auth;
mod cancel;
mod compat;
mod conn;
mod guard;
pub mod lake;
pub mod live;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::QueryHook;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use skystream_engine::objstore::StoreLocation;
use skystream_netguard::{AuthLimiter, ConnTable};
use skystream_sql::limits::SqlLimits;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

pub use live::LiveTable;

/// The database (catalog) name clients see.
pub const DATABASE: &str = "skystream";

/// How the SQL endpoint is set up.
#[derive(Debug, Clone)]
pub struct SqlConfig {
    /// The lake to serve (its datasets become tables of schema `lake`); none serves no lake.
    pub lake: Option<StoreLocation>,
    /// The one user name accepted.
    pub user: String,
    /// Its password (SCRAM-SHA-256); `None` accepts any client without one (trust).
    pub password: Option<String>,
    /// Longest a statement may run (a client's `SET statement_timeout` may lower it).
    pub query_timeout: Duration,
    /// Memory the server's queries may hold at once (their results included).
    pub memory_limit: usize,
    /// How often the lake is re-listed for new datasets and files.
    pub refresh: Duration,
    /// Connections open at once; past it the oldest idle one is closed.
    pub max_connections: usize,
    /// A connection without a statement in progress is closed after this.
    pub idle_timeout: Duration,
    /// A client must log in within this.
    pub startup_timeout: Duration,
    /// The longest query text (and bind message).
    pub max_query_bytes: usize,
    /// Statements running at once over the whole server (others wait within their timeout).
    pub max_concurrent_statements: usize,
    /// Limits on a statement's shape.
    pub limits: SqlLimits,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            lake: None,
            user: "skystream".into(),
            password: None,
            query_timeout: Duration::from_secs(30),
            memory_limit: 512 << 20,
            refresh: Duration::from_secs(10),
            max_connections: 64,
            idle_timeout: Duration::from_secs(600),
            startup_timeout: Duration::from_secs(10),
            max_query_bytes: 1 << 20,
            max_concurrent_statements: 4,
            limits: SqlLimits::default(),
        }
    }
}

/// Stack of the threads that serve connections: a statement refused for its depth is still
/// dropped (by recursion) there.
const CONNECTION_STACK: usize = 256 << 20;
/// Stack of the threads statements are planned and run on.
const EXECUTION_STACK: usize = 64 << 20;

/// A running SQL endpoint.
pub struct SqlServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The runtimes of the connections and of the statements (off the caller's runtime).
    runtimes: Vec<tokio::runtime::Runtime>,
}

fn runtime(name: &str, stack: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .thread_stack_size(stack)
        .enable_all()
        .build()
}

/// What every connection shares.
struct Shared {
    base: SessionContext,
    cfg: SqlConfig,
    login: auth::Login,
    auth_failures: Arc<AuthLimiter>,
    exec: tokio::runtime::Handle,
    slots: Arc<Semaphore>,
    relay: conn::RelayContext,
}

impl Shared {
    /// The handlers of a new connection: a session of its own (settings changed on one
    /// connection stay there), its hooks and its startup.
    fn handlers(&self, peer: std::net::IpAddr, cancel: Arc<cancel::Canceller>) -> auth::Handlers {
        let state =
            datafusion::execution::SessionStateBuilder::new_from_existing(self.base.state())
                .with_physical_optimizer_rule(Arc::new(cancel::CancellableJoins {
                    cancel: cancel.clone(),
                }))
                .build();
        let ctx = SessionContext::new_with_state(state);
        let executor = Arc::new(guard::Executor {
            max_timeout: self.cfg.query_timeout,
            runtime: self.exec.clone(),
            slots: self.slots.clone(),
            cancel,
        });
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(guard::ReadOnly),
            Arc::new(guard::Settings),
            Arc::new(guard::Cursors {
                executor: executor.clone(),
            }),
            Arc::new(datafusion_postgres::hooks::set_show::SetShowHook),
            Arc::new(datafusion_postgres::hooks::transactions::TransactionStatementHook),
            Arc::new(guard::Execute {
                executor: executor.clone(),
            }),
        ];
        auth::Handlers {
            service: Arc::new(service::SessionService::new(
                ctx,
                hooks,
                executor,
                self.cfg.limits,
                self.cfg.max_query_bytes,
            )),
            startup: Arc::new(auth::Startup::new(
                &self.login,
                peer,
                self.auth_failures.clone(),
            )),
        }
    }
}

impl SqlServer {
    /// Binds `listen` and serves clients until [`SqlServer::stop`].
    pub async fn start(
        listen: SocketAddr,
        cfg: SqlConfig,
        live: Vec<(String, Arc<dyn LiveTable>)>,
    ) -> std::io::Result<Self> {
        let base = session(&cfg, live).await.map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let conn_rt = runtime("sql-conn", CONNECTION_STACK)?;
        let exec_rt = runtime("sql-exec", EXECUTION_STACK)?;
        // The listener moves to the connections' runtime.
        let listener = listener.into_std()?;
        let auth_failures = Arc::new(AuthLimiter::default());
        let shared = Arc::new(Shared {
            base,
            login: match &cfg.password {
                Some(p) => auth::Login::Scram(Arc::new(auth::Account::new(&cfg.user, p))),
                None => auth::Login::Trust,
            },
            auth_failures: auth_failures.clone(),
            exec: exec_rt.handle().clone(),
            slots: Arc::new(Semaphore::new(cfg.max_concurrent_statements.max(1))),
            relay: conn::RelayContext {
                limits: conn::ConnLimits {
                    max_query_bytes: cfg.max_query_bytes,
                    startup_timeout: cfg.startup_timeout,
                    idle_timeout: cfg.idle_timeout,
                },
                auth: auth_failures,
                keys: Arc::default(),
            },
            cfg: cfg.clone(),
        });
        let (stop, mut stopped) = watch::channel(false);
        info!(%addr, user = %cfg.user, password = cfg.password.is_some(), "SQL endpoint (PostgreSQL wire protocol) listening");
        let task = conn_rt.spawn(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    warn!("SQL endpoint: {e}");
                    return;
                }
            };
            let table = ConnTable::new(shared.cfg.max_connections);
            loop {
                let (tcp, peer) = tokio::select! {
                    _ = stopped.changed() => break,
                    r = listener.accept() => match r {
                        Ok(a) => a,
                        Err(e) => {
                            warn!("SQL endpoint: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let ip = peer.ip();
                let admitted = match table.admit(ip) {
                    Ok(a) => a,
                    Err(_) => {
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let mut tcp = tcp;
                            // Answered after the SSL request, so that clients show the message.
                            let first = tokio::time::timeout(
                                Duration::from_secs(2),
                                conn::startup(&mut tcp, &shared.relay),
                            );
                            if let Ok(Some(_)) = first.await {
                                conn::refuse_connection(
                                    tcp,
                                    "53300",
                                    "too many connections: every connection has a statement running",
                                )
                                .await;
                            }
                        });
                        continue;
                    }
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut tcp = tcp;
                    let c = admitted.conn.clone();
                    let first = tokio::select! {
                        m = conn::startup(&mut tcp, &shared.relay) => m,
                        _ = c.closing(shared.cfg.startup_timeout) => None,
                    };
                    let Some(first) = first else { return };
                    // An address locked out after failed logins is told so, and let go.
                    if let Err(wait) = shared.auth_failures.check(ip) {
                        let msg = format!(
                            "too many failed logins from this address: retry in {} s",
                            wait.as_secs_f64().ceil().max(1.0)
                        );
                        conn::refuse_connection(tcp, "28P01", &msg).await;
                        return;
                    }
                    let (ours, theirs) = match tokio::net::UnixStream::pair() {
                        Ok(p) => p,
                        Err(e) => {
                            warn!(%peer, "SQL connection: {e}");
                            return;
                        }
                    };
                    let canceller = Arc::new(cancel::Canceller::default());
                    let handlers = shared.handlers(ip, canceller.clone());
                    let pg = tokio::spawn(async move {
                        if let Err(e) =
                            datafusion_postgres::pgwire::tokio::process_socket_unix(theirs, handlers)
                                .await
                        {
                            warn!(%peer, "SQL connection: {e}");
                        }
                    });
                    conn::relay(tcp, ours, first, c, ip, canceller.clone(), &shared.relay).await;
                    // The client is gone: whatever its connection was running stops.
                    canceller.cancel();
                    pg.abort();
                    drop(admitted);
                });
            }
            table.close_all();
        });
        Ok(Self {
            addr,
            stop,
            task: Some(task),
            runtimes: vec![conn_rt, exec_rt],
        })
    }

    /// Stops accepting clients and closes the open connections.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SqlServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Runtimes cannot be dropped (blocking) inside the caller's async context.
        for rt in self.runtimes.drain(..) {
            rt.shutdown_background();
        }
    }
}

/// The DataFusion session every connection's session is copied from: catalog `skystream` with
/// schemas `lake` (default), `live` and `public`, pg_catalog, the compatibility functions, and
/// scalar functions capped in the size of what they return (see `skystream_sql::limits`).
pub async fn session(
    cfg: &SqlConfig,
    live: Vec<(String, Arc<dyn LiveTable>)>,
) -> datafusion::error::Result<SessionContext> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(cfg.memory_limit)))
        // No spilling to this machine's disk: a query past the memory limit fails, alone.
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        // File listings are cached for at most one refresh interval: new files show up.
        .with_cache_manager(
            CacheManagerConfig::default().with_list_files_cache_ttl(Some(cfg.refresh)),
        )
        .build_arc()?;
    let config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE, "lake")
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let catalog = Arc::new(MemoryCatalogProvider::new());
    let lake_schema = match &cfg.lake {
        Some(loc) => {
            let schema = lake::LakeSchema::open(loc.clone(), &ctx).await?;
            schema.keep_fresh(cfg.refresh);
            schema as Arc<dyn datafusion::catalog::SchemaProvider>
        }
        None => Arc::new(MemorySchemaProvider::new()),
    };
    catalog.register_schema("lake", lake_schema)?;
    let live_schema = Arc::new(MemorySchemaProvider::new());
    for (name, table) in live {
        datafusion::catalog::SchemaProvider::register_table(
            live_schema.as_ref(),
            name,
            Arc::new(live::LiveTableProvider::new(table)),
        )?;
    }
    catalog.register_schema("live", live_schema)?;
    catalog.register_schema("public", Arc::new(MemorySchemaProvider::new()))?;
    ctx.register_catalog(DATABASE, catalog);
    setup_pg_catalog(&ctx, DATABASE, EmptyContextProvider).map_err(|e| *e)?;
    compat::register(&ctx);
    skystream_sql::limits::cap_scalar_functions(
        &ctx,
        (cfg.memory_limit / 4).clamp(1 << 20, skystream_sql::limits::DEFAULT_MAX_VALUE_BYTES),
    );
    Ok(ctx)
}
