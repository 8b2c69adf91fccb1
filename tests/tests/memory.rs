//! Window state counts against a pipeline's memory limit (DataFusion's memory pool): a query
//! whose state outgrows it fails with an error saying so, and state freed as windows close is
//! given back, so a query whose open windows fit runs for as long as it likes.

use skystream_sql::{PlanOptions, plan_script_with};

const LIMIT: usize = 8 << 20;

/// Every post's URI as a group key: 200,000 distinct keys (about 13 MB of key values alone)
/// over windows of `width`, from midnight so a day-wide window holds them all.
fn per_post(width: &str) -> String {
    format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '1' SECOND)
         WITH (connector = 'synthetic', rate = '40', speed = 'max', count = '200000',
               start = '2026-01-01T00:00:00Z', seed = '5', batch_size = '1000');
         CREATE TABLE out WITH (connector = 'memory');
         INSERT INTO out SELECT win['end'] AS window_end, uri, n FROM (
             SELECT uri, count(*) AS n, tumble(INTERVAL {width}) AS win
             FROM posts GROUP BY uri, win)"
    )
}

async fn run(sql: &str) -> skystream_engine::Result<skystream_engine::pipeline::RunSummary> {
    let reg = skystream_registry::registry();
    let opts = PlanOptions {
        memory_limit: Some(LIMIT),
        ..Default::default()
    };
    let planned = plan_script_with(sql, &reg, &opts)
        .await
        .unwrap_or_else(|e| panic!("planning failed: {e}"));
    planned.pipeline.run().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_state_over_the_memory_limit_fails_with_a_clear_error() {
    let err = run(&per_post("'1' DAY"))
        .await
        .expect_err("200,000 keys in one window do not fit in 8 MiB");
    assert!(
        matches!(err, skystream_engine::Error::MemoryLimit(_)),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("out of memory: operator 1:window of flow 'out'"),
        "{msg}"
    );
    assert!(msg.contains("memory limit of 8.0 MiB"), "{msg}");
    assert!(msg.contains("group keys"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_state_is_given_back_as_windows_close() {
    // The same 200,000 keys, but about 2,400 per one-minute window: the state of the open
    // windows stays far below the limit, and what closed windows held is released.
    let summary = run(&per_post("'1' MINUTE"))
        .await
        .expect("one-minute windows fit in 8 MiB");
    assert!(summary.completed);
    assert_eq!(summary.metrics.rows_in, 200_000);
    assert_eq!(summary.metrics.windows_emitted, 84, "{:?}", summary.metrics);
    // Every window was flushed at the end: nothing is held but scratch space.
    assert!(
        summary.metrics.state_bytes < 1 << 20,
        "{}",
        summary.metrics.state_bytes
    );
}
