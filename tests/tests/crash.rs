//! Exactly-once across crashes, for every source: `skystream run` with checkpoints is killed
//! with SIGKILL at 20 random moments and restarted until it finishes; its results must equal
//! those of an uninterrupted run exactly — no row dropped as late after a resume, no window
//! one short.
//!
//! - `replay`: a JSONL file, paced (300x), out of order within the watermark bound;
//! - `synthetic`: paced (300x), out of order within the bound;
//! - `jetstream`: a local Jetstream server replaying a file at a fixed event rate;
//! - `kafka`: two partitions, slightly out of order, into a Redis ranking and an S3 lake with
//!   checkpoints on S3 (real services: tansu, moto, redis-server; scripts/services.sh).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::AsyncCommands;
use skystream_engine::objstore::StoreLocation;
use skystream_synthetic::{Burst, Generator, GeneratorConfig};
use skystream_tests::serve::Killed;
use skystream_tests::services::*;
use skystream_tests::*;

/// SIGKILLs per crashing run.
const KILLS: usize = 20;
/// A kill comes up to this long after an attempt's first checkpoint (which come every 150 ms).
const JITTER_MS: u64 = 200;

fn redis_url() -> String {
    std::env::var("SKYSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A tiny deterministic generator for kill times (the seed is printed to replay a failure).
struct Lcg(u64);
impl Lcg {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo).max(1)
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One pipeline run by `skystream run` again and again.
struct Runs {
    dir: PathBuf,
    /// The script of run `name` (the lake and Redis keys carry the name).
    script: Box<dyn Fn(&str) -> String>,
    env: Vec<(String, String)>,
    /// Where checkpoints go (`None`: a local directory under `dir`).
    checkpoints: Option<String>,
}

impl Runs {
    fn new(tag: &str, script: impl Fn(&str) -> String + 'static) -> Self {
        let dir = std::env::temp_dir().join(format!("skystream-crash-{}", unique_topic(tag)));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            script: Box::new(script),
            env: Vec::new(),
            checkpoints: None,
        }
    }

    fn log_path(&self, run: &str, attempt: usize) -> PathBuf {
        self.dir.join(format!("{run}-{attempt}.log"))
    }

    fn spawn(&self, run: &str, checkpoint: bool, attempt: usize) -> Child {
        let path = self.dir.join(format!("{run}.sql"));
        std::fs::write(&path, (self.script)(run)).unwrap();
        let mut c = Command::new(skystream_bin());
        c.arg("run").arg(&path).args([
            "--progress",
            "0.1",
            "--idle-timeout",
            "3600",
            "--name",
            run,
        ]);
        if checkpoint {
            let loc = self
                .checkpoints
                .clone()
                .unwrap_or_else(|| self.dir.join("checkpoints").display().to_string());
            c.args(["--checkpoint", &loc, "--checkpoint-interval", "0.15"]);
        }
        let log = std::fs::File::create(self.log_path(run, attempt)).unwrap();
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.env("SKYSTREAM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot start skystream")
    }

    fn log(&self, run: &str, attempt: usize) -> String {
        std::fs::read_to_string(self.log_path(run, attempt)).unwrap_or_default()
    }

    /// The late rows the run's summary line reports.
    fn late(&self, run: &str, attempt: usize) -> u64 {
        let log = self.log(run, attempt);
        let line = log
            .lines()
            .rev()
            .find(|l| l.starts_with("done:") || l.starts_with("stopped:"))
            .unwrap_or_else(|| panic!("no summary in the log:\n{log}"));
        let before = line.split(" late").next().unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Runs `run` until it ends (or `finish` ends it); panics if it fails.
    fn uninterrupted(
        &self,
        run: &str,
        finish: &dyn Fn(&Runs, &str, usize, &mut Child),
    ) -> Duration {
        let started = Instant::now();
        let mut c = self.spawn(run, false, 0);
        finish(self, run, 0, &mut c);
        let st = wait_done(&mut c, Duration::from_secs(300));
        assert!(st.success(), "reference run failed:\n{}", self.log(run, 0));
        started.elapsed()
    }

    /// SIGKILLs `run` [`KILLS`] times, then lets it end; returns the last attempt. Each kill
    /// comes at a random moment (0 to `jitter_ms`) after the attempt stored a checkpoint of its
    /// own (its progress line shows one): every restart resumes from further on, and a kill
    /// lands between checkpoints, sinks holding uncommitted work.
    fn crashing(
        &self,
        run: &str,
        jitter_ms: u64,
        finish: &dyn Fn(&Runs, &str, usize, &mut Child),
    ) -> usize {
        let seed = seed();
        eprintln!("{run}: kill seed {seed}; logs in {}", self.dir.display());
        let mut rng = Lcg(seed);
        let mut attempt = 0;
        while attempt < KILLS {
            let mut c = self.spawn(run, true, attempt);
            let until = Instant::now() + Duration::from_secs(120);
            while !self.log(run, attempt).contains("| checkpoint ") {
                assert!(
                    c.try_wait().unwrap().is_none(),
                    "attempt {attempt} ended before kill {} of {KILLS} (make the input longer):\n{}",
                    attempt + 1,
                    self.log(run, attempt)
                );
                assert!(
                    Instant::now() < until,
                    "attempt {attempt} stored no checkpoint"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(rng.next_ms(0, jitter_ms)));
            assert!(
                c.try_wait().unwrap().is_none(),
                "attempt {attempt} ended before its kill (make the input longer)"
            );
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
            attempt += 1;
        }
        let mut c = self.spawn(run, true, attempt);
        finish(self, run, attempt, &mut c);
        let st = wait_done(&mut c, Duration::from_secs(300));
        assert!(
            st.success(),
            "attempt {attempt} failed:\n{}",
            self.log(run, attempt)
        );
        let last = self.log(run, attempt);
        assert!(
            last.contains("resumed from"),
            "the last run did not resume from a checkpoint:\n{last}"
        );
        attempt
    }
}

fn wait_done(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("skystream did not finish in {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A finite input: the run ends on its own.
fn until_end(_: &Runs, _: &str, _: usize, _: &mut Child) {}

/// Lake rows of `run` in the local lake of `runs`.
async fn lake_rows(runs: &Runs, run: &str) -> Vec<String> {
    read_lake(&lake_url(&runs.dir.join(run).join("lake")), None).await
}

/// The crashing run `crash` (last attempt `last`) ended like the uninterrupted `ref`: as many
/// late rows, the same lake rows (and many of them).
async fn assert_crash_like_ref(runs: &Runs, last: usize) {
    assert_eq!(runs.late("crash", last), runs.late("ref", 0));
    let (got, want) = (lake_rows(runs, "crash").await, lake_rows(runs, "ref").await);
    assert!(want.len() > 1000, "{} rows", want.len());
    assert_rows_eq(&got, &want);
}

/// Keyword counts (with DISTINCT authors) of `posts` into a local lake under `dir/run/lake`.
fn counts_into_lake(dir: &Path, source: &str) -> impl Fn(&str) -> String + 'static {
    let dir = dir.to_path_buf();
    let source = source.to_string();
    move |run: &str| {
        format!(
            "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
             WITH ({source});
             CREATE TABLE lake WITH (connector = 'lake', path = '{lake}', time_column = 'window_end',
                   rollover_rows = '5000');
             {KEYWORD_COUNTS_VIEW}
             INSERT INTO lake SELECT * FROM counts;",
            lake = dir.join(run).join("lake").display()
        )
    }
}

/// Posts (and likes) over 90 minutes of event time, out of order by up to 3 s (the watermark
/// allows 5 s).
fn hour_of_posts(seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        rate: 40.0,
        duration_ns: Some(90 * 60 * 1_000_000_000),
        bursts: vec![Burst::parse("eclipse:10m:10m:8").unwrap()],
        authors: 400,
        out_of_order_ns: 3_000_000_000,
        other_events: 0.2,
        tail_words: 400,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_killed_20_times_ends_exactly_like_an_uninterrupted_run() {
    let file = synthetic_file("crash-replay", hour_of_posts(31));
    let probe = Runs::new("replay", |_| String::new());
    let source = format!(
        "connector = 'replay', path = '{}', speed = '300'",
        file.display()
    );
    let runs = Runs {
        script: Box::new(counts_into_lake(&probe.dir, &source)),
        ..probe
    };
    let took = runs.uninterrupted("ref", &until_end);
    eprintln!("uninterrupted run: {took:?}");
    let last = runs.crashing("crash", JITTER_MS, &until_end);
    assert_eq!(runs.late("ref", 0), 0);
    assert_crash_like_ref(&runs, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_killed_20_times_ends_exactly_like_an_uninterrupted_run() {
    let probe = Runs::new("synthetic", |_| String::new());
    let source = "connector = 'synthetic', seed = '37', rate = '40', duration = '90m', \
                  speed = '300', out_of_order = '3s', authors = '400', other_events = '0.2'";
    let runs = Runs {
        script: Box::new(counts_into_lake(&probe.dir, source)),
        ..probe
    };
    let took = runs.uninterrupted("ref", &until_end);
    eprintln!("uninterrupted run: {took:?}");
    let last = runs.crashing("crash", JITTER_MS, &until_end);
    assert_crash_like_ref(&runs, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_killed_20_times_ends_exactly_like_an_uninterrupted_run() {
    // 90 minutes of posts served in time order at 12,000 events/s, then one post an hour later:
    // once the watermark has passed every window of the hour, the run is stopped (SIGTERM,
    // a last checkpoint) — a Jetstream stream never ends by itself.
    let mut cfg = hour_of_posts(41);
    cfg.out_of_order_ns = 0;
    let file = synthetic_file("crash-jetstream", cfg.clone());
    let mut text = std::fs::read_to_string(&file).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let last_us = events
        .iter()
        .filter_map(|v| v["time_us"].as_i64())
        .max()
        .unwrap();
    let sentinel_us = last_us + 3_600_000_000;
    // A post like the others, an hour after the last.
    let mut sentinel = events
        .iter()
        .rev()
        .find(|v| v["commit"]["collection"] == "app.bsky.feed.post")
        .unwrap()
        .clone();
    sentinel["time_us"] = serde_json::json!(sentinel_us);
    sentinel["commit"]["rkey"] = serde_json::json!("sentinel");
    text.push_str(&format!("{sentinel}\n"));
    std::fs::write(&file, text).unwrap();
    let mut server = Killed(
        Command::new(skystream_bin())
            .args([
                "jetstream-serve",
                "--listen",
                "127.0.0.1:0",
                "--rate",
                "12000",
                "--file",
            ])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = {
        let mut line = String::new();
        std::io::BufReader::new(server.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    let probe = Runs::new("jetstream", |_| String::new());
    let source = format!("connector = 'jetstream', url = '{url}', batch_size = '200'");
    let runs = Runs {
        script: Box::new(counts_into_lake(&probe.dir, &source)),
        ..probe
    };
    // The watermark the sentinel brings, as progress lines print it.
    let wm = skystream_engine::time::format_ns(sentinel_us * 1000 - 5_000_000_000);
    let stop_at_sentinel = move |r: &Runs, run: &str, attempt: usize, c: &mut Child| {
        let until = Instant::now() + Duration::from_secs(300);
        while !r.log(run, attempt).contains(&format!("watermark {wm}")) {
            assert!(
                c.try_wait().unwrap().is_none() && Instant::now() < until,
                "the run never reached the sentinel:\n{}",
                r.log(run, attempt)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // SIGTERM: a graceful stop with a last checkpoint.
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    };
    let took = runs.uninterrupted("ref", &stop_at_sentinel);
    eprintln!("uninterrupted run: {took:?}");
    let last = runs.crashing("crash", JITTER_MS, &stop_at_sentinel);
    drop(server);
    assert_crash_like_ref(&runs, last).await;
}

/// Synthetic Jetstream events (posts and other kinds) into `topic`, keyed by DID.
async fn fill_topic(bootstrap: &str, topic: &str) -> usize {
    // In order: Kafka's partitions interleave it enough.
    let mut g = Generator::new(GeneratorConfig {
        out_of_order_ns: 0,
        ..hour_of_posts(23)
    })
    .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let mut buf = Vec::new();
    let mut pending = Vec::new();
    let mut n = 0;
    while g.next_event(&mut buf).is_some() {
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let did = v["did"].as_str().unwrap_or("").to_string();
        let payload = buf.clone();
        let p = producer.clone();
        let topic = topic.to_string();
        pending.push(tokio::spawn(async move {
            p.send(
                FutureRecord::to(&topic).key(&did).payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
        }));
        n += 1;
        if pending.len() >= 5000 {
            for t in pending.drain(..) {
                t.await.unwrap().unwrap();
            }
        }
    }
    for t in pending {
        t.await.unwrap().unwrap();
    }
    n
}

/// Sorted sets `{run}:{window}` and the `latest` pointer.
async fn redis_state(run: &str) -> (Option<String>, BTreeMap<String, Vec<(String, f64)>>) {
    let mut c = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("no Redis: run scripts/services.sh");
    let latest: Option<String> = c.get(format!("{run}:latest")).await.unwrap();
    let keys: Vec<String> = c.keys(format!("{run}:*")).await.unwrap();
    let mut m = BTreeMap::new();
    for k in keys {
        let window = k[run.len() + 1..].to_string();
        if window == "latest" {
            continue;
        }
        let members: Vec<(String, f64)> = c.zrange_withscores(&k, 0, -1).await.unwrap();
        m.insert(window, members);
    }
    (latest, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_killed_20_times_ends_with_the_same_redis_state_and_lake_rows() {
    let bootstrap = kafka();
    let topic = unique_topic("crash");
    create_topic(&bootstrap, &topic, 2).await;
    let events = fill_topic(&bootstrap, &topic).await;
    let bucket = new_bucket("crash");
    let endpoint = s3_endpoint();
    let (b, t, e, bk) = (
        bootstrap.clone(),
        topic.clone(),
        endpoint.clone(),
        bucket.clone(),
    );
    let mut runs = Runs::new("kafka", move |run| {
        format!(
            "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
             WITH (connector = 'kafka', bootstrap_servers = '{b}', topic = '{t}',
                   format = 'jetstream', bounded = 'latest', batch_size = '200');
             CREATE TABLE ranking WITH (connector = 'redis', url = '{redis}', layout = 'ranking',
                   key = '{run}', window = 'window_end', member = 'keyword', score = 'n');
             CREATE TABLE lake WITH (connector = 'lake', path = 's3://{bk}/{run}/counts',
                   s3_endpoint = '{e}', time_column = 'window_end',
                   rollover_rows = '20000');
             {KEYWORD_COUNTS_VIEW}
             INSERT INTO lake SELECT * FROM counts;
             INSERT INTO ranking SELECT window_end, keyword, n FROM (
               SELECT win['end'] AS window_end, keyword, n,
                      ROW_NUMBER() OVER (PARTITION BY win ORDER BY n DESC, keyword) AS rn
               FROM (SELECT keyword, count(*) AS n,
                            hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
                     FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
                     GROUP BY keyword, win))
             WHERE rn <= 10;",
            redis = redis_url(),
        )
    });
    runs.checkpoints = Some(format!("s3://{bucket}/checkpoints"));
    runs.env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let reference = format!("{topic}-ref");
    let crashed = format!("{topic}-crash");
    let took = runs.uninterrupted(&reference, &until_end);
    eprintln!("{events} events; uninterrupted run {took:?}");
    runs.crashing(&crashed, JITTER_MS, &until_end);

    // Redis: the same windows, members and scores, and the same latest pointer.
    let (want_latest, want) = redis_state(&reference).await;
    let (got_latest, got) = redis_state(&crashed).await;
    assert!(want.len() >= 30, "{} windows", want.len());
    assert_eq!(got_latest, want_latest);
    let differ: Vec<String> = want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|w| want.get(*w) != got.get(*w))
        .map(|w| {
            format!(
                "window {w}:\n  want {:?}\n  got  {:?}",
                want.get(w),
                got.get(w)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} windows differ:\n{}",
        differ.len(),
        want.len(),
        differ.join("\n")
    );

    // The lake: the same rows, each once, read with DataFusion's ListingTable.
    let loc = StoreLocation::open(&format!("s3://{bucket}"), &s3_options(&endpoint)).unwrap();
    let url = |run: &str| format!("s3://{bucket}/{run}/counts/");
    let want_rows = read_lake(&url(&reference), Some(loc.store.clone())).await;
    let got_rows = read_lake(&url(&crashed), Some(loc.store.clone())).await;
    assert!(want_rows.len() > 10_000, "{} lake rows", want_rows.len());
    assert_rows_eq(&got_rows, &want_rows);
    // Nothing is left in staging.
    let staged = loc
        .list(&format!("{crashed}/counts/_staging"))
        .await
        .unwrap();
    assert!(staged.is_empty(), "{staged:?}");
}
