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
//! - **guards**: only reads (`SELECT`, `EXPLAIN`, `SHOW`, `SET`, transactions and cursors); any
//!   write or DDL fails with SQLSTATE 25006; password authentication; a per-statement timeout
//!   (SQLSTATE 57014) and a memory limit shared by the server's queries.

mod auth;
mod compat;
mod guard;
pub mod lake;
pub mod live;

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
use tokio::net::TcpListener;
use tokio::sync::watch;
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
    /// Its password; `None` accepts any client without one (trust).
    pub password: Option<String>,
    /// Longest a statement may run (a client's `SET statement_timeout` may lower it).
    pub query_timeout: Duration,
    /// Memory the server's queries may hold at once.
    pub memory_limit: usize,
    /// How often the lake is re-listed for new datasets and files.
    pub refresh: Duration,
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
        }
    }
}

/// A running SQL endpoint.
pub struct SqlServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl SqlServer {
    /// Binds `listen` and serves clients until [`SqlServer::stop`].
    pub async fn start(
        listen: SocketAddr,
        cfg: SqlConfig,
        live: Vec<(String, Arc<dyn LiveTable>)>,
    ) -> std::io::Result<Self> {
        let ctx = Arc::new(session(&cfg, live).await.map_err(std::io::Error::other)?);
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(guard::ReadOnly),
            Arc::new(datafusion_postgres::hooks::cursor::CursorStatementHook),
            Arc::new(datafusion_postgres::hooks::set_show::SetShowHook),
            Arc::new(datafusion_postgres::hooks::transactions::TransactionStatementHook),
            Arc::new(guard::Executor {
                max_timeout: cfg.query_timeout,
            }),
        ];
        let handlers = Arc::new(auth::Handlers::new(
            ctx,
            hooks,
            cfg.user.clone(),
            cfg.password.clone(),
            cfg.query_timeout,
        ));
        let (stop, mut stopped) = watch::channel(false);
        info!(%addr, user = %cfg.user, password = cfg.password.is_some(), "SQL endpoint (PostgreSQL wire protocol) listening");
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    r = listener.accept() => match r {
                        Ok((socket, peer)) => {
                            let handlers = handlers.clone();
                            tokio::spawn(async move {
                                if let Err(e) = datafusion_postgres::pgwire::tokio::process_socket(socket, None, handlers).await {
                                    warn!(%peer, "SQL connection: {e}");
                                }
                            });
                        }
                        Err(e) => {
                            warn!("SQL endpoint: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
        Ok(Self { addr, stop, task })
    }

    /// Stops accepting clients (open connections end with the process).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The DataFusion session every connection shares: catalog `skystream` with schemas `lake`
/// (default), `live` and `public`, pg_catalog, and the compatibility functions.
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
    Ok(ctx)
}
