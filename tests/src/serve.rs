//! `skystream serve` as a child process, for tests that attack it: a crash or a wedge shows
//! as a dead or unresponsive process instead of taking the test binary down with it.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A running `skystream serve`.
pub struct Served {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// The SQL endpoint, unless it is off.
    pub sql: Option<SocketAddr>,
    pub data_dir: PathBuf,
    args: Vec<String>,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

/// A child process that is killed and reaped when the test lets go of it (or panics).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `cond` holds, checking every 20 ms, for at most `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async [`wait_until`].
pub async fn wait_for<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Served {
    /// Starts `skystream serve` on free loopback ports with a fresh data directory and
    /// `args`, and waits for both endpoints to listen.
    pub fn start(args: &[&str]) -> Served {
        let data_dir = std::env::temp_dir().join(crate::services::unique_topic("serve"));
        std::fs::create_dir_all(&data_dir).unwrap();
        Self::start_in(data_dir, args.iter().map(|s| s.to_string()).collect())
    }

    fn start_in(data_dir: PathBuf, args: Vec<String>) -> Served {
        let mut cmd = Command::new(crate::skystream_bin());
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir);
        if !args.iter().any(|a| a == "--sql-listen") {
            cmd.args(["--sql-listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(&args)
            .env("SKYSTREAM_LOG", "info")
            .env_remove("SKYSTREAM_API_TOKEN")
            .env_remove("SKYSTREAM_SQL_PASSWORD")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start skystream serve");
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let stderr = child.stderr.take().unwrap();
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*l;
                m.lock().unwrap().push(line);
                cv.notify_all();
            }
            l.1.notify_all();
        });
        let sql_off = args
            .windows(2)
            .any(|w| w[0] == "--sql-listen" && w[1] == "off");
        let mut s = Served {
            child,
            http: String::new(),
            sql: None,
            data_dir,
            args,
            lines,
        };
        let http = s
            .wait_line(Duration::from_secs(120), "skystream API on http://")
            .unwrap_or_else(|| panic!("serve did not start:\n{}", s.log()));
        s.http = http
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(|a| format!("http://{a}"))
            .unwrap();
        if !sql_off {
            let sql = s
                .wait_line(Duration::from_secs(60), "skystream SQL on postgresql://")
                .unwrap_or_else(|| panic!("no SQL endpoint:\n{}", s.log()));
            let addr = sql
                .split('@')
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap();
            s.sql = Some(addr.parse().unwrap());
        }
        s
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_line(&self, timeout: Duration, needle: &str) -> Option<String> {
        let (m, cv) = &*self.lines;
        let until = Instant::now() + timeout;
        let mut lines = m.lock().unwrap();
        loop {
            if let Some(l) = lines.iter().find(|l| l.contains(needle)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            lines = cv.wait_timeout(lines, until - now).unwrap().0;
        }
    }

    /// Everything it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.lines.0.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then waits for it to exit within `timeout`; true if it did.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let child = &mut self.child;
        wait_until(timeout, || child.try_wait().unwrap().is_some())
    }

    /// Stops it (SIGTERM, then SIGKILL) and starts it again on the same data directory.
    pub fn restart(mut self) -> Served {
        if self.alive() && !self.terminate(Duration::from_secs(30)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let dir = self.data_dir.clone();
        let args = std::mem::take(&mut self.args);
        Self::start_in(dir, args)
    }

    /// Peak resident memory of the process so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// CPU time (user + system) of its threads whose name starts with `prefix`, in clock
    /// ticks.
    pub fn thread_cpu(&self, prefix: &str) -> u64 {
        let mut total = 0;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return 0;
        };
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !comm.trim_end().starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is 3rd; utime 14th, stime 15th.
            if let Some(rest) = stat.rsplit(')').next() {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                total += n(11) + n(12);
            }
        }
        total
    }

    /// Threads whose name starts with `prefix`.
    pub fn threads(&self, prefix: &str) -> usize {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return 0;
        };
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .unwrap_or_default()
                    .starts_with(prefix)
            })
            .count()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The HTTP API in-process on a loopback port, as the tests that drive it over HTTP use it:
/// 4 pipelines at most, a 5 s idle timeout, the default sandbox, 256 MiB per pipeline, 64 KiB
/// bodies and, when given, a bearer token. Returns the server and `http://127.0.0.1:PORT`.
pub async fn start_api(data_dir: PathBuf, token: Option<&str>) -> (skystream_api::Server, String) {
    use skystream_api::{ApiConfig, ManagerConfig, Sandbox, Server};
    let cfg = ApiConfig {
        manager: ManagerConfig {
            data_dir,
            max_pipelines: 4,
            idle_timeout: Duration::from_secs(5),
            sandbox: Sandbox::default(),
            memory_limit: Some(256 << 20),
            ..Default::default()
        },
        token: token.map(String::from),
        body_limit: 64 << 10,
        ..Default::default()
    };
    let server = Server::start("127.0.0.1:0", cfg, skystream_registry::registry())
        .await
        .expect("server starts");
    let base = format!("http://{}", server.addr);
    (server, base)
}
