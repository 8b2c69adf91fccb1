//! `skystream serve`: the HTTP API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use skystream_api::{ApiConfig, ManagerConfig, Sandbox, Server};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "SKYSTREAM_LISTEN")]
    listen: String,
    /// Pipeline definitions and checkpoints are kept here (pipelines resume after a restart).
    #[arg(long, default_value = "skystream-data", env = "SKYSTREAM_DATA_DIR")]
    data_dir: PathBuf,
    /// Bearer token every endpoint but /healthz and /readyz requires.
    #[arg(long, env = "SKYSTREAM_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// At most this many pipelines.
    #[arg(long, default_value_t = 32)]
    max_pipelines: usize,
    /// Memory each pipeline's operators may hold, in MiB (0: unlimited).
    #[arg(long, default_value_t = 1024)]
    memory_limit_mb: usize,
    /// Largest request body, in KiB.
    #[arg(long, default_value_t = 256)]
    body_limit_kb: usize,
    /// Seconds without input after which a source stops holding windows back.
    #[arg(long, default_value_t = 5.0)]
    idle_timeout: f64,
    /// A host submitted queries may reach besides loopback and *.bsky.network (repeatable;
    /// `*.example.com` matches subdomains, `*` any host).
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Let submitted queries read and write files of this machine (replay, file, local lake)
    /// and set raw kafka.* properties. Only for a trusted, local server.
    #[arg(long)]
    unsandboxed: bool,
    /// Read /api/v1/trends from Redis: the URL (the key prefix is --trends-key).
    #[arg(long, env = "SKYSTREAM_TRENDS_REDIS")]
    trends_redis: Option<String>,
    /// Key prefix of the `ranking` sink /api/v1/trends reads.
    #[arg(long, default_value = "trending")]
    trends_key: String,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    if !(args.idle_timeout.is_finite() && args.idle_timeout >= 0.0) {
        bail!("--idle-timeout must be a non-negative number of seconds");
    }
    let mut sandbox = if args.unsandboxed {
        Sandbox::open()
    } else {
        Sandbox::default()
    };
    sandbox.allowed_hosts.extend(args.allow_hosts);
    let config = ApiConfig {
        manager: ManagerConfig {
            data_dir: args.data_dir,
            max_pipelines: args.max_pipelines,
            idle_timeout: Duration::from_secs_f64(args.idle_timeout),
            sandbox,
            memory_limit: (args.memory_limit_mb > 0).then_some(args.memory_limit_mb << 20),
        },
        token: args.token.filter(|t| !t.is_empty()),
        body_limit: args.body_limit_kb << 10,
        trends_redis: args.trends_redis.map(|u| (u, args.trends_key)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = Server::start(&args.listen, config, skystream_registry::registry()).await?;
        eprintln!(
            "skystream API on http://{} (OpenAPI: /api/v1/openapi.json)",
            server.addr
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("stopping: last checkpoints...");
        server.stop().await?;
        Ok(())
    })
}
