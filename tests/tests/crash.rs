//! Exactly-once across crashes: `skystream run` over Kafka, writing a ranking to Redis and
//! keyword counts to a Parquet lake on S3 (checkpoints on S3 too), is killed with SIGKILL at
//! random moments and restarted until it finishes. Its Redis state and lake rows must equal
//! those of an uninterrupted run exactly. Real services: tansu, moto, redis-server
//! (scripts/services.sh).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::AsyncCommands;
use skystream_engine::objstore::StoreLocation;
use skystream_synthetic::{Burst, Generator, GeneratorConfig};
use skystream_tests::services::*;
use skystream_tests::*;

fn redis_url() -> String {
    std::env::var("SKYSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Synthetic Jetstream events (posts and other kinds) into `topic`, keyed by DID.
async fn fill_topic(bootstrap: &str, topic: &str) -> usize {
    let mut g = Generator::new(GeneratorConfig {
        seed: 23,
        rate: 40.0,
        duration_ns: Some(45 * 60 * 1_000_000_000),
        bursts: vec![Burst::parse("eclipse:10m:10m:8").unwrap()],
        authors: 400,
        other_events: 0.2,
        tail_words: 400,
        ..Default::default()
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

struct Setup {
    bootstrap: String,
    topic: String,
    bucket: String,
    endpoint: String,
    dir: PathBuf,
}

impl Setup {
    fn script(&self, run: &str) -> PathBuf {
        let sql = format!(
            "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
             WITH (connector = 'kafka', bootstrap_servers = '{b}', topic = '{t}',
                   format = 'jetstream', bounded = 'latest', batch_size = '400');
             CREATE TABLE ranking WITH (connector = 'redis', url = '{redis}', layout = 'ranking',
                   key = '{run}', window = 'window_end', member = 'keyword', score = 'n');
             CREATE TABLE lake WITH (connector = 'lake', path = 's3://{bucket}/{run}/counts',
                   s3_endpoint = '{endpoint}', time_column = 'window_end',
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
            b = self.bootstrap,
            t = self.topic,
            redis = redis_url(),
            bucket = self.bucket,
            endpoint = self.endpoint,
        );
        let path = self.dir.join(format!("{run}.sql"));
        std::fs::write(&path, sql).unwrap();
        path
    }

    fn spawn(&self, run: &str, checkpoint: bool, attempt: usize) -> Child {
        let mut c = Command::new(skystream_bin());
        c.arg("run").arg(self.script(run)).args([
            "--progress",
            "0",
            "--idle-timeout",
            "120",
            "--name",
            run,
        ]);
        if checkpoint {
            c.args([
                "--checkpoint",
                &format!("s3://{}/checkpoints", self.bucket),
                "--checkpoint-interval",
                "0.4",
            ]);
        }
        let log = std::fs::File::create(self.dir.join(format!("{run}-{attempt}.log"))).unwrap();
        c.env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("SKYSTREAM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot start skystream")
    }

    fn log(&self, run: &str, attempt: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("{run}-{attempt}.log"))).unwrap_or_default()
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
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// A tiny deterministic generator for kill times (the seed is printed to replay a failure).
struct Lcg(u64);
impl Lcg {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (self.0 >> 33) % (hi - lo)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_pipeline_ends_with_the_same_redis_state_and_lake_rows() {
    let bootstrap = kafka();
    let topic = unique_topic("crash");
    create_topic(&bootstrap, &topic, 2).await;
    let events = fill_topic(&bootstrap, &topic).await;
    let dir = std::env::temp_dir().join(format!("skystream-{topic}"));
    std::fs::create_dir_all(&dir).unwrap();
    let s = Setup {
        bootstrap,
        topic: topic.clone(),
        bucket: new_bucket("crash"),
        endpoint: s3_endpoint(),
        dir,
    };
    let reference = format!("{topic}-ref");
    let crashed = format!("{topic}-crash");

    // The uninterrupted run.
    let started = Instant::now();
    let mut c = s.spawn(&reference, false, 0);
    let st = wait_done(&mut c, Duration::from_secs(300));
    assert!(
        st.success(),
        "reference run failed:\n{}",
        s.log(&reference, 0)
    );
    let uninterrupted = started.elapsed();

    // The crashing run: SIGKILL at random moments, restart, until it finishes on its own.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!(
        "{events} events; uninterrupted run {uninterrupted:?}; kill seed {seed}; logs in {}",
        s.dir.display()
    );
    let mut rng = Lcg(seed);
    let mut kills = 0;
    let mut attempt = 0;
    // Each kill comes within the first quarter of an uninterrupted run's time (after start-up):
    // four of them cannot let the pipeline finish before the last one lands.
    let window_ms = (uninterrupted.as_millis() as u64 / 4).max(1200);
    loop {
        let mut c = s.spawn(&crashed, true, attempt);
        if kills < 4 {
            let after = Duration::from_millis(rng.next_ms(500, window_ms));
            std::thread::sleep(after);
            if c.try_wait().unwrap().is_none() {
                c.kill().unwrap(); // SIGKILL
                c.wait().unwrap();
                kills += 1;
                eprintln!("attempt {attempt}: killed after {after:?}");
                attempt += 1;
                continue;
            }
        }
        let st = wait_done(&mut c, Duration::from_secs(300));
        assert!(
            st.success(),
            "attempt {attempt} failed:\n{}",
            s.log(&crashed, attempt)
        );
        break;
    }
    assert!(
        kills == 4,
        "only {kills} kills landed while the pipeline ran"
    );
    let last_log = s.log(&crashed, attempt);
    assert!(
        last_log.contains("resumed from"),
        "the last run did not resume from a checkpoint:\n{last_log}"
    );

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
    let loc = StoreLocation::open(&format!("s3://{}", s.bucket), &s3_options(&s.endpoint)).unwrap();
    let url = |run: &str| format!("s3://{}/{run}/counts/", s.bucket);
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
