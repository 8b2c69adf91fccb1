//! Checkpoints and the Parquet lake, in process: a pipeline stopped and resumed produces exactly
//! the rows of an uninterrupted run; lake files appear only when their checkpoint commits and
//! read back with DataFusion's ListingTable; a damaged checkpoint leaves the previous one in
//! force, and so does one that cannot be stored; an S3 outage is retried without loss; an S3
//! lake with a missing bucket or bad credentials fails at start, clearly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::RecordBatch;
use skystream_engine::checkpoint::{CheckpointConfig, CheckpointStore};
use skystream_engine::connector::ConnectorRegistry;
use skystream_engine::metrics::MetricsSnapshot;
use skystream_engine::objstore::StoreLocation;
use skystream_engine::pipeline::Pipeline;
use skystream_tests::faults::{FaultyStore, Proxy};
use skystream_tests::serve::wait_for;
use skystream_tests::services::*;
use skystream_tests::*;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "skystream-ck-{}-{name}-{}",
        std::process::id(),
        unique_topic("d")
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Keyword counts over sliding windows (open and frozen panes, a DISTINCT count), from a
/// paced synthetic firehose in event-time order: 20 min of event time in 1200 / `speed` s.
fn script(speed: &str, sinks: &str, inserts: &str) -> String {
    format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '1' MINUTE)
         WITH (connector = 'synthetic', rate = '20', duration = '20m', speed = '{speed}',
               seed = '11', bursts = 'eclipse:5m:8m:10', authors = '150');
         CREATE TABLE out WITH (connector = 'memory');
         {sinks}
         {KEYWORD_COUNTS_VIEW}
         INSERT INTO out SELECT * FROM counts;
         {inserts}"
    )
}

/// Plans `sql` with checkpoints at `ck` (if any, every 150 ms).
async fn plan(sql: &str, ck: Option<StoreLocation>) -> (Pipeline, ConnectorRegistry) {
    let reg = skystream_registry::registry();
    let planned = skystream_sql::plan_script(sql, &reg)
        .await
        .unwrap_or_else(|e| panic!("planning failed: {e}"));
    let mut p = planned.pipeline;
    p.config.name = "cktest".into();
    if let Some(loc) = ck {
        let mut c = CheckpointConfig::new(loc);
        c.interval = Duration::from_millis(150);
        p.checkpoint = Some(c);
    }
    (p, reg)
}

/// Rows the run wrote to the memory table `out`.
fn out_rows(reg: &ConnectorRegistry) -> Vec<RecordBatch> {
    reg.memory()
        .batches("out")
        .map(|(_, b)| b)
        .unwrap_or_default()
}

/// Plans and runs `sql`, stopping after `stop_after`.
async fn run(
    sql: &str,
    ck: Option<StoreLocation>,
    stop_after: Option<Duration>,
) -> (Vec<RecordBatch>, MetricsSnapshot, bool) {
    let (p, reg) = plan(sql, ck).await;
    let stop = p.stop_handle();
    if let Some(d) = stop_after {
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.stop();
        });
    }
    let summary = p.run().await.unwrap_or_else(|e| panic!("run failed: {e}"));
    (out_rows(&reg), summary.metrics, summary.completed)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn local(dir: &Path) -> StoreLocation {
    StoreLocation::open(dir.to_str().unwrap(), &Default::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_resumed_equals_uninterrupted() {
    let sql = script("400", "", "");
    let (want, m, done) = run(&sql, None, None).await;
    assert!(done);
    // A paced source's heartbeats follow the wall clock (at 400x, 1 min of event time is
    // 150 ms): with late rows the result would vary from run to run.
    assert_eq!(m.late_rows, 0);
    assert!(rows(&want).len() > 1000, "{} rows", rows(&want).len());

    let dir = temp_dir("resume");
    let mut got = Vec::new();
    let mut stops = 0;
    let mut resumed = Vec::new();
    loop {
        let (out, m, done) = run(&sql, Some(local(&dir)), Some(Duration::from_millis(700))).await;
        got.extend(out);
        resumed.push(m.restored_epoch);
        assert_eq!(m.checkpoint_failures, 0);
        if done {
            break;
        }
        stops += 1;
        assert!(stops < 20, "the pipeline never finished");
    }
    assert!(stops >= 2, "stopped only {stops} times");
    assert!(resumed[1..].iter().all(|r| r.is_some()), "{resumed:?}");
    // A stop takes a last checkpoint: nothing is emitted twice, nothing is lost.
    assert_rows_eq(&rows(&got), &rows(&want));
    // Old checkpoints are pruned.
    let store = CheckpointStore::new(local(&dir));
    let epochs = store.epochs().await.unwrap();
    assert!(!epochs.is_empty() && epochs.len() <= 3, "{epochs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_newest_checkpoint_falls_back_to_the_previous() {
    let dir = temp_dir("damaged");
    let sql = script("400", "", "");
    let (_, m, done) = run(&sql, Some(local(&dir)), Some(Duration::from_millis(600))).await;
    assert!(!done);
    let last = m.last_checkpoint.expect("a checkpoint").epoch;
    assert!(last >= 2, "epoch {last}");
    let store = CheckpointStore::new(local(&dir));
    // Damage the newest one: restore must take the one before.
    let newest = dir.join(format!("chk-{last:012}.ckpt"));
    let mut data = std::fs::read(&newest).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&newest, data).unwrap();
    let restored = store.latest().await.unwrap().expect("an older checkpoint");
    assert_eq!(restored.manifest.epoch, last - 1);
    // And a file that is not a checkpoint at all is skipped the same way.
    std::fs::write(dir.join(format!("chk-{:012}.ckpt", last + 5)), b"garbage").unwrap();
    assert_eq!(
        store.latest().await.unwrap().unwrap().manifest.epoch,
        last - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lake_files_are_partitioned_named_by_epoch_and_committed_with_checkpoints() {
    let root = temp_dir("lake");
    let lake = root.join("lake");
    let sql = script(
        "max",
        &format!(
            "CREATE TABLE l WITH (connector = 'lake', path = '{}', time_column = 'window_end',
                                  rollover_rows = '5000', row_group_rows = '1000');",
            lake.display()
        ),
        "INSERT INTO l SELECT * FROM counts;",
    );
    let (want, m, done) = run(&sql, Some(local(&root.join("ck"))), None).await;
    assert!(done);
    assert!(m.checkpoints >= 1);
    let files = files_under(&lake);
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        // dt=YYYY-MM-DD/hour=HH/part-{pipeline}-{table}-{epoch}-{seq}.parquet
        let parts: Vec<&str> = f.split('/').collect();
        assert_eq!(parts.len(), 3, "{f}");
        assert!(
            parts[0].starts_with("dt=2026-07-04") && parts[1].starts_with("hour="),
            "{f}"
        );
        assert!(
            parts[2].starts_with("part-cktest-l-") && parts[2].ends_with(".parquet"),
            "{f}"
        );
    }
    assert_rows_eq(&read_lake(&lake_url(&lake), None).await, &rows(&want));

    // Without checkpoints a re-run writes the same file names: it overwrites, never duplicates.
    let lake2 = root.join("lake2");
    let sql2 = sql.replace(lake.to_str().unwrap(), lake2.to_str().unwrap());
    run(&sql2, None, None).await;
    let first = files_under(&lake2);
    run(&sql2, None, None).await;
    assert_eq!(files_under(&lake2), first);
    assert_rows_eq(&read_lake(&lake_url(&lake2), None).await, &rows(&want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_files_are_invisible_until_their_checkpoint_commits() {
    let root = temp_dir("staged");
    let lake = root.join("lake");
    let ck = root.join("ck");
    // Checkpoints cannot be stored at first: files roll (every 300 rows) into _staging and must
    // stay there; once checkpoints are stored, every committed file belongs to a stored
    // checkpoint's epoch. Waits are on what the lake holds, not on time.
    let sql = script(
        "200",
        &format!(
            "CREATE TABLE l WITH (connector = 'lake', path = '{}', rollover_rows = '300');",
            lake.display()
        ),
        "INSERT INTO l SELECT * FROM counts;",
    );
    let (loc, store) = faulty(&ck);
    store.fail_puts(true);
    let (p, reg) = plan(&sql, Some(loc)).await;
    let stop = p.stop_handle();
    let run = tokio::spawn(p.run());
    let committed = |lake: &Path| -> Vec<String> {
        files_under(lake)
            .into_iter()
            .filter(|f| !f.starts_with("_staging/"))
            .collect()
    };
    let staged_appeared = wait_for(Duration::from_secs(60), || async {
        files_under(&lake)
            .iter()
            .any(|f| f.starts_with("_staging/"))
    })
    .await;
    assert!(staged_appeared, "no file was staged");
    for f in files_under(&lake) {
        assert!(
            f.starts_with("_staging/") && f.ends_with(".inprogress"),
            "{f} visible without a checkpoint"
        );
    }
    // Checkpoints are stored again: files are committed, each after its checkpoint.
    store.fail_puts(false);
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // The checkpoints first: a file committed after this read is of a later epoch.
        let newest = CheckpointStore::new(local(&ck))
            .epochs()
            .await
            .unwrap_or_default()
            .first()
            .copied()
            .unwrap_or(0);
        let files = committed(&lake);
        for f in &files {
            let epoch: u64 = f.rsplit('-').nth(1).unwrap().parse().unwrap();
            assert!(epoch <= newest + 1, "{f} visible before checkpoint {epoch}");
        }
        if files.len() >= 3 {
            break;
        }
        assert!(std::time::Instant::now() < until, "nothing was committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.stop();
    let summary = run.await.unwrap().unwrap();
    let mut all = out_rows(&reg);
    if !summary.completed {
        let (rest, _, done) = run_to_end(&sql, Some(local(&ck))).await;
        assert!(done);
        all.extend(rest);
    }
    assert_rows_eq(&read_lake(&lake_url(&lake), None).await, &rows(&all));
    assert!(
        files_under(&lake)
            .iter()
            .all(|f| !f.starts_with("_staging/"))
    );
}

/// Plans and runs `sql` to its end.
async fn run_to_end(
    sql: &str,
    ck: Option<StoreLocation>,
) -> (Vec<RecordBatch>, MetricsSnapshot, bool) {
    run(sql, ck, None).await
}

#[tokio::test]
async fn s3_lake_with_missing_bucket_or_bad_credentials_fails_at_start() {
    let endpoint = s3_endpoint();
    let bucket = unique_topic("nobucket").to_lowercase();
    let sql = |path: &str, extra: &str| {
        script(
            "max",
            &format!(
                "CREATE TABLE l WITH (connector = 'lake', path = '{path}',
                                      s3_endpoint = '{endpoint}'{extra});"
            ),
            "INSERT INTO l SELECT * FROM counts;",
        )
    };
    let reg = skystream_registry::registry();
    let creds = ", s3_access_key_id = 'test', s3_secret_access_key = 'test'";
    let p = skystream_sql::plan_script(&sql(&format!("s3://{bucket}/x"), creds), &reg)
        .await
        .unwrap();
    let e = p.pipeline.run().await.unwrap_err().to_string();
    assert!(e.contains(&bucket) && e.contains("NoSuchBucket"), "{e}");

    // An unknown S3 option is a planning error naming it.
    let e = match skystream_sql::plan_script(&sql("s3://b/x", ", s3_colour = 'blue'"), &reg).await {
        Ok(_) => panic!("an unknown S3 option was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("s3_colour"), "{e}");

    // Bad credentials: an S3 server that checks them (moto with authentication on).
    let (mut moto, url) = auth_moto();
    let p = skystream_sql::plan_script(
        &sql("s3://any/x", "").replace(&endpoint, &url).replace(
            "s3_endpoint",
            "s3_access_key_id = 'AKIAWRONG', s3_secret_access_key = 'nope', s3_endpoint",
        ),
        &reg,
    )
    .await
    .unwrap();
    let e = p.pipeline.run().await.unwrap_err().to_string();
    let _ = moto.kill();
    assert!(
        e.contains("InvalidAccessKeyId") || e.contains("403") || e.contains("Forbidden"),
        "{e}"
    );
}

/// A moto server that authenticates requests (no user exists, so every key is wrong).
fn auth_moto() -> (std::process::Child, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m moto.server (scripts/services.sh installs moto)");
    let addr = format!("127.0.0.1:{port}");
    assert!(
        wait_port(&addr, Duration::from_secs(30)),
        "moto did not start"
    );
    (child, format!("http://{addr}"))
}

/// A checkpoint location in `dir` whose writes can be made to fail.
fn faulty(dir: &Path) -> (StoreLocation, Arc<FaultyStore>) {
    let inner = local(dir);
    let store = FaultyStore::new(inner.store.clone());
    let loc = StoreLocation {
        store: store.clone(),
        prefix: inner.prefix,
        url: format!("faulty:{}", dir.display()),
    };
    (loc, store)
}

/// Checkpoints that cannot be stored are counted and the previous one stays in force; a stop
/// whose last checkpoint fails is an error; the next run resumes from the last stored
/// checkpoint and the lake ends with every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_checkpoints_keep_the_previous_one() {
    let root = temp_dir("failing");
    let lake = root.join("lake");
    let sql = script(
        "400",
        &format!(
            "CREATE TABLE l WITH (connector = 'lake', path = '{}', rollover_rows = '2000');",
            lake.display()
        ),
        "INSERT INTO l SELECT * FROM counts;",
    );
    let (want, _, _) = run(
        &sql.replace(lake.to_str().unwrap(), root.join("ref").to_str().unwrap()),
        None,
        None,
    )
    .await;

    let (loc, store) = faulty(&root.join("ck"));
    let (p, _) = plan(&sql, Some(loc.clone())).await;
    let metrics = p.metrics();
    let stop = p.stop_handle();
    let faults = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        faults.fail_puts(true);
        tokio::time::sleep(Duration::from_millis(600)).await;
        stop.stop();
    });
    let e = p
        .run()
        .await
        .expect_err("the last checkpoint failed")
        .to_string();
    assert!(
        e.contains("final checkpoint") && e.contains("injected"),
        "{e}"
    );
    let m = metrics.snapshot();
    let stored = m
        .last_checkpoint
        .expect("checkpoints before the failures")
        .epoch;
    assert!(m.checkpoint_failures >= 3, "{m:?}");
    assert_eq!(
        store.failed_puts.load(Ordering::SeqCst),
        m.checkpoint_failures
    );
    // The newest stored checkpoint is the last one that succeeded.
    let latest = CheckpointStore::new(loc.clone())
        .latest()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.manifest.epoch, stored);
    // No lake file of a failed checkpoint became visible.
    for f in files_under(&lake)
        .iter()
        .filter(|f| !f.starts_with("_staging/"))
    {
        let epoch: u64 = f.rsplit('-').nth(1).unwrap().parse().unwrap();
        assert!(
            epoch <= stored,
            "{f} committed, but checkpoint {epoch} failed"
        );
    }

    store.fail_puts(false);
    let (p, _) = plan(&sql, Some(loc)).await;
    let summary = p.run().await.unwrap();
    assert!(summary.completed);
    assert_eq!(summary.metrics.restored_epoch, Some(stored));
    assert_rows_eq(&read_lake(&lake_url(&lake), None).await, &rows(&want));
}

/// An S3 outage (every connection dropped, new ones refused) in the middle of a run: uploads
/// and checkpoints are retried, the run finishes and the lake holds every row exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_is_retried_without_loss() {
    let endpoint = s3_endpoint();
    let target = endpoint.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(target).await;
    let bucket = new_bucket("outage");
    let sql = script(
        "150",
        &format!(
            "CREATE TABLE l WITH (connector = 'lake', path = 's3://{bucket}/lake',
                                  s3_endpoint = '{}', rollover_rows = '1000',
                                  s3_access_key_id = 'test', s3_secret_access_key = 'test');",
            proxy.url()
        ),
        "INSERT INTO l SELECT * FROM counts;",
    );
    let ck = StoreLocation::open(&format!("s3://{bucket}/ck"), &s3_options(&proxy.url())).unwrap();
    let (p, reg) = plan(&sql, Some(ck)).await;
    let outage = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxy.restore();
    };
    let (summary, ()) = tokio::join!(p.run(), outage);
    let summary = summary.unwrap();
    assert!(summary.completed);
    assert!(
        proxy.refused.load(Ordering::SeqCst) > 0,
        "the outage hit nothing"
    );
    assert!(summary.metrics.checkpoints >= 3, "{:?}", summary.metrics);
    let want = out_rows(&reg);
    let direct = StoreLocation::open(&format!("s3://{bucket}"), &s3_options(&endpoint)).unwrap();
    let got = read_lake(&format!("s3://{bucket}/lake/"), Some(direct.store.clone())).await;
    assert_rows_eq(&got, &rows(&want));
    assert!(direct.list("lake/_staging").await.unwrap().is_empty());
}
