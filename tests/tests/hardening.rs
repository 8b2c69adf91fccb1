//! Nothing a client sends can crash, wedge or escape the server. Each test attacks a running
//! `skystream serve` (a child process, so a crash or a wedge shows instead of taking the test
//! down) the way a client with a valid token or SQL login could, then checks that the server
//! still answers `/healthz` within a second and still runs a normal query.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use skystream_tests::http::{get, post};
use skystream_tests::pg::{AuthRequest, PgClient};
use skystream_tests::serve::{Served, wait_for, wait_until};
use skystream_tests::services::*;

/// A small pipeline that plans (the "normal query" of the HTTP API).
const NORMAL: &str =
    "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
     WITH (connector = 'synthetic', duration = '10m');
     CREATE TABLE out WITH (connector = 'stdout');
     INSERT INTO out SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
     FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts) GROUP BY keyword, win";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `/healthz` answers 200 within a second.
async fn assert_live(s: &Served, what: &str) {
    let started = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("{}/healthz", s.http))
        .timeout(Duration::from_secs(1))
        .send()
        .await;
    assert!(
        matches!(&r, Ok(r) if r.status() == StatusCode::OK),
        "after {what}: /healthz did not answer within 1 s ({:?} after {:?})\n{}",
        r.err(),
        started.elapsed(),
        s.log()
    );
}

/// The server answers `/healthz` within a second, plans a pipeline, and (with its SQL
/// endpoint trusting loopback) runs `SELECT 1`.
async fn assert_healthy(s: &Served, what: &str) {
    assert_live(s, what).await;
    let (st, v) = post(
        &client(),
        &format!("{}/api/v1/validate", s.http),
        json!({ "query": NORMAL }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "after {what}: {v}");
    if let Some(addr) = s.sql {
        let mut c = PgClient::trusted(addr).await.expect("SQL login");
        let rows = c.simple("SELECT 1 AS one").await.unwrap().unwrap();
        assert_eq!(rows, vec![vec![Some("1".to_string())]], "after {what}");
    }
}

/// Submits a pipeline; returns the status and body.
async fn create(s: &Served, name: &str, query: &str) -> (StatusCode, Value) {
    post(
        &client(),
        &format!("{}/api/v1/pipelines", s.http),
        json!({ "name": name, "query": query, "checkpoint_interval": 1.0 }),
    )
    .await
}

async fn pipeline(s: &Served, id: &str) -> Value {
    get(&client(), &format!("{}/api/v1/pipelines/{id}", s.http))
        .await
        .1
}

/// Waits until pipeline `id` satisfies `ok` (at most `timeout`); returns its view.
async fn wait_pipeline(
    s: &Served,
    id: &str,
    timeout: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + timeout;
    loop {
        let v = pipeline(s, id).await;
        if ok(&v) {
            return v;
        }
        assert!(
            Instant::now() < until,
            "pipeline {id}: timed out; last: {v:#}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn chain(term: &str, op: &str, n: usize) -> String {
    vec![term; n].join(op)
}

fn sqlstate(
    r: std::io::Result<Result<skystream_tests::pg::Rows, skystream_tests::pg::PgError>>,
) -> String {
    match r.expect("connection kept") {
        Ok(rows) => panic!("expected an error, got {rows:?}"),
        Err(e) => {
            eprintln!("{e}");
            e.code
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_expressions_and_long_unions_are_refused_without_a_crash() {
    let s = Served::start(&[]);
    let addr = s.sql.unwrap();
    let mut c = PgClient::trusted(addr).await.unwrap();
    // The reproducer: 2,000 terms (4 KB); 1,000 UNION ALL branches; both protocols.
    let deep = format!("select {}", chain("1", "+", 2000));
    assert_eq!(sqlstate(c.simple(&deep).await), "54001");
    assert_eq!(sqlstate(c.extended(&deep, &[]).await), "54001");
    let unions = chain("select 1", " union all ", 1000);
    assert_eq!(sqlstate(c.simple(&unions).await), "54001");
    assert_eq!(sqlstate(c.extended(&unions, &[]).await), "54001");
    // 300,000 terms (600 KB): refused by its size in tokens before anything recursive.
    let huge = format!("select {}", chain("1", "+", 300_000));
    assert_eq!(sqlstate(c.simple(&huge).await), "54001");
    // Nested parentheses: sqlparser's own recursion limit answers.
    let nested = format!("select {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(c.simple(&nested).await.unwrap().is_err());
    // A query below the limits still runs on the same connection.
    let ok = format!("select {}", chain("1", "+", 200));
    assert_eq!(
        c.simple(&ok).await.unwrap().unwrap(),
        vec![vec![Some("200".to_string())]]
    );

    // The same over HTTP: POST /api/v1/validate answers 400 naming the limit.
    let http = client();
    for (body, limit) in [
        (
            format!(
                "CREATE TABLE out WITH (connector = 'stdout'); INSERT INTO out SELECT {} AS x",
                chain("1", "+", 2000)
            ),
            "max_expr_depth",
        ),
        (
            format!(
                "CREATE TABLE out WITH (connector = 'stdout'); INSERT INTO out {}",
                chain("SELECT 1 AS x", " UNION ALL ", 1000)
            ),
            "max_set_operations",
        ),
        (
            format!(
                "CREATE TABLE out WITH (connector = 'stdout'); INSERT INTO out SELECT {} AS x",
                chain("1", "+", 100_000)
            ),
            "max_expr_depth",
        ),
    ] {
        let (st, v) = post(
            &http,
            &format!("{}/api/v1/validate", s.http),
            json!({ "query": body }),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"].as_str().unwrap().contains(limit), "{v}");
        let (st, v) = create(&s, "deep", &body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    }
    assert_healthy(&s, "deep statements").await;
}

/// A CPU-bound pipeline: a synthetic firehose at full speed into sliding keyword counts (a
/// core's worth of work for as long as it runs).
fn heavy(seed: u32) -> String {
    format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'synthetic', rate = '200', duration = '3650d', seed = '{seed}');
         CREATE TABLE out WITH (connector = 'stdout', format = 'json');
         INSERT INTO out SELECT win['end'] AS e, keyword, n FROM (
           SELECT keyword, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '10' MINUTE) AS win
           FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
           GROUP BY keyword, win)"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_heavy_work_neither_blocks_the_server_nor_outlives_a_stop() {
    let mut s = Served::start(&["--memory-limit-mb", "512", "--sql-timeout", "30"]);
    // Window geometry is bounded at planning, with an error that says so.
    let absurd = "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'synthetic');
         CREATE TABLE out WITH (connector = 'stdout');
         INSERT INTO out SELECT count(*) AS n, hop(INTERVAL '1' MILLISECOND, INTERVAL '3650' DAY) AS w
         FROM posts GROUP BY w";
    let (st, v) = create(&s, "absurd", absurd).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("slides"), "{v}");

    // Two heavy pipelines (two cores' worth of work): the API and SQL still answer.
    // (Short names: a thread's name, `pipeline-<name>`, is cut at 15 characters.)
    let (st, a) = create(&s, "ha", &heavy(1)).await;
    assert_eq!(st, StatusCode::CREATED, "{a}");
    let (st, b) = create(&s, "hb", &heavy(2)).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (a, b) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    wait_pipeline(&s, &a, Duration::from_secs(60), |v| {
        v["metrics"]["rows_in"].as_u64() > Some(100_000)
    })
    .await;
    for _ in 0..3 {
        assert_healthy(&s, "two heavy pipelines").await;
    }

    // Two SQL cross joins past their statement timeout are aborted: the execution threads
    // stop using CPU.
    let addr = s.sql.unwrap();
    let cross = "SELECT count(*) FROM generate_series(1, 1000000) a CROSS JOIN generate_series(1, 1000000) b WHERE a.value + b.value = 3";
    let joins: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = PgClient::trusted(addr).await.unwrap();
                c.simple("SET statement_timeout = 2000")
                    .await
                    .unwrap()
                    .unwrap();
                let started = Instant::now();
                let r = c.simple(cross).await.unwrap();
                (r, started.elapsed())
            })
        })
        .collect();
    for j in joins {
        let (r, took) = j.await.unwrap();
        assert_eq!(r.unwrap_err().code, "57014");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    assert!(
        wait_until(Duration::from_secs(1), || {
            let before = s.thread_cpu("sql-exec");
            std::thread::sleep(Duration::from_millis(200));
            s.thread_cpu("sql-exec") == before
        }),
        "timed-out statements kept running"
    );
    assert_healthy(&s, "two cross joins past their timeout").await;

    // A stopped pipeline's thread is gone within a second of the stop's answer.
    let (st, v) = post(
        &client(),
        &format!("{}/api/v1/pipelines/{b}/stop", s.http),
        json!({}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        wait_until(Duration::from_secs(1), || s.threads("pipeline-hb") == 0),
        "the stopped pipeline's thread still runs"
    );

    // SIGTERM is honoured while a heavy pipeline runs; it resumes after a restart, and the
    // server answers then too.
    let data_dir = s.data_dir.clone();
    assert!(
        s.terminate(Duration::from_secs(30)),
        "SIGTERM was ignored:\n{}",
        s.log()
    );
    // A saved pipeline that no longer plans comes back `failed`, not as a wedged server.
    let def = data_dir.join("pipelines").join(format!("{b}.json"));
    let mut d: Value = serde_json::from_slice(&std::fs::read(&def).unwrap()).unwrap();
    d["query"] = json!(absurd);
    d["running"] = json!(true);
    std::fs::write(&def, serde_json::to_vec(&d).unwrap()).unwrap();
    let s = s.restart();
    let v = wait_pipeline(&s, &b, Duration::from_secs(30), |v| v["state"] == "failed").await;
    assert!(v["error"].as_str().unwrap().contains("slides"), "{v}");
    wait_pipeline(&s, &a, Duration::from_secs(30), |v| v["state"] == "running").await;
    assert_healthy(
        &s,
        "a restart with a heavy pipeline and one that no longer plans",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_delete_finish_when_a_sink_is_down_and_bad_options_fail_at_planning() {
    let s = Served::start(&[]);
    // Redis at a closed port: the sink retries, degraded.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let q = format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'synthetic', speed = '600', duration = '3h');
         CREATE TABLE r WITH (connector = 'redis', url = 'redis://127.0.0.1:{port}', layout = 'ranking',
                              window = 'e', member = 'keyword', score = 'n');
         INSERT INTO r SELECT win['end'] AS e, keyword, n FROM (
           SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
           FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
           GROUP BY keyword, win)"
    );
    for (i, op) in ["stop", "delete"].iter().enumerate() {
        let (st, p) = create(&s, &format!("down-{i}"), &q).await;
        assert_eq!(st, StatusCode::CREATED, "{p}");
        let id = p["id"].as_str().unwrap().to_string();
        wait_pipeline(&s, &id, Duration::from_secs(30), |v| {
            v["metrics"]["degraded_sinks"]
                .as_array()
                .is_some_and(|d| !d.is_empty())
        })
        .await;
        let started = Instant::now();
        let r = if *op == "stop" {
            client()
                .post(format!("{}/api/v1/pipelines/{id}/stop", s.http))
                .send()
                .await
                .unwrap()
        } else {
            client()
                .delete(format!("{}/api/v1/pipelines/{id}", s.http))
                .send()
                .await
                .unwrap()
        };
        assert!(
            r.status().is_success(),
            "{op}: {} {}",
            r.status(),
            r.text().await.unwrap()
        );
        eprintln!(
            "{op} of a pipeline whose sink is down took {:?}",
            started.elapsed()
        );
        if *op == "stop" {
            assert_eq!(pipeline(&s, &id).await["state"], "stopped");
        } else {
            let (st, _) = get(&client(), &format!("{}/api/v1/pipelines/{id}", s.http)).await;
            assert_eq!(st, StatusCode::NOT_FOUND);
        }
    }

    // Options that used to panic inside a task are refused at planning, by name.
    let src = |opts: &str| {
        format!(
            "CREATE TABLE posts WITH (connector = 'synthetic', {opts});
             CREATE TABLE out WITH (connector = 'stdout');
             INSERT INTO out SELECT did FROM posts"
        )
    };
    let lake = |opts: &str| {
        format!(
            "CREATE TABLE posts WITH (connector = 'synthetic');
             CREATE TABLE out WITH (connector = 'lake', path = 's3://bucket/x', {opts});
             INSERT INTO out SELECT did, event_time FROM posts"
        )
    };
    for (q, says) in [
        (src("authors = '18446744073709551615'"), "authors"),
        (src("batch_size = '100000000'"), "batch_size"),
        (src("other_events = 'inf'"), "other_events"),
        (src("duration = '1000000000d'"), "duration"),
        (
            lake(
                "s3_endpoint = 'http://127.0.0.1:9000\\\\x', s3_access_key_id = 'a', s3_secret_access_key = 'b'",
            ),
            "backslash",
        ),
    ] {
        for endpoint in ["validate", "pipelines"] {
            let body = if endpoint == "validate" {
                json!({ "query": q })
            } else {
                json!({ "name": "bad", "query": q })
            };
            let (st, v) = post(&client(), &format!("{}/api/v1/{endpoint}", s.http), body).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
            assert!(v["error"].as_str().unwrap().contains(says), "{says}: {v}");
        }
    }
    assert_healthy(&s, "a sink that is down and bad options").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_reads_addresses_as_the_clients_do() {
    let s = Served::start(&[]);
    // Something listening where the bypasses pointed: it must see no connection.
    let trap = std::net::TcpListener::bind("127.0.0.2:0").expect("127.0.0.2 is loopback");
    trap.set_nonblocking(true).unwrap();
    let trap_port = trap.local_addr().unwrap().port();
    let sink = |with: &str| {
        format!(
            "CREATE TABLE posts WITH (connector = 'synthetic', duration = '1m');
             CREATE TABLE out WITH ({with});
             INSERT INTO out SELECT did, event_time FROM posts"
        )
    };
    for (q, says) in [
        (
            format!(
                "CREATE TABLE posts WITH (connector = 'kafka', bootstrap_servers = '127.0.0.2:{trap_port}@127.0.0.1', topic = 't', format = 'jetstream');
                 CREATE TABLE out WITH (connector = 'stdout');
                 INSERT INTO out SELECT did FROM posts"
            ),
            "bootstrap server",
        ),
        (
            sink(&format!("connector = 'kafka', bootstrap_servers = '127.0.0.2:{trap_port}', topic = 't'")),
            "not allowed",
        ),
        (
            sink("connector = 'lake', path = 's3://bucket/p', s3_region = 'x@127.0.0.2:19000/', s3_access_key_id = 'a', s3_secret_access_key = 'b'"),
            "region",
        ),
        (
            sink("connector = 'lake', path = 's3://x@127.0.0.2:19000#/p', s3_access_key_id = 'a', s3_secret_access_key = 'b'"),
            "bucket",
        ),
        (
            sink("connector = 'lake', path = 's3://bucket/p', s3_endpoint = 'http://127.0.0.1:9000'"),
            "credentials",
        ),
        (
            sink(&format!("connector = 'lake', path = 's3://bucket/p', s3_endpoint = 'http://127.0.0.2:{trap_port}', s3_access_key_id = 'a', s3_secret_access_key = 'b'")),
            "not allowed",
        ),
        (
            sink("connector = 'redis', url = 'unix:///var/run/redis/redis.sock', layout = 'publish'"),
            "local socket",
        ),
        (
            sink("connector = 'redis', url = 'redis://:pw@127.0.0.1:6379', layout = 'publish'"),
            "password",
        ),
        (
            sink(&format!("connector = 'redis', url = 'redis://127.0.0.2:{trap_port}', layout = 'publish'")),
            "not allowed",
        ),
    ] {
        let (st, v) = post(
            &client(),
            &format!("{}/api/v1/pipelines", s.http),
            json!({ "name": "escape", "query": q }),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{says}: {v}");
    }
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a refused table still reached 127.0.0.2"
    );
    // What the sandbox allows still plans: loopback Redis with its password as an option.
    let (st, v) = post(
        &client(),
        &format!("{}/api/v1/validate", s.http),
        json!({ "query": sink("connector = 'redis', url = 'redis://127.0.0.1:6379', password = 'x', layout = 'publish'") }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_healthy(&s, "sandbox escapes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_settings_are_per_connection_and_allow_listed() {
    let s = Served::start(&["--sql-memory-mb", "64"]);
    let addr = s.sql.unwrap();
    let mut a = PgClient::trusted(addr).await.unwrap();
    for sql in [
        "SET datafusion.execution.batch_size = 1",
        "SET datafusion.runtime.memory_limit = '100G'",
        "RESET datafusion.runtime.memory_limit",
        "SET datafusion.runtime.temp_directory = '/tmp/x'",
        "SET datafusion.catalog.information_schema = false",
        "RESET ALL",
        "SET SESSION datafusion.execution.batch_size = 1",
    ] {
        let r = a.simple(sql).await.unwrap();
        if sql == "RESET ALL" {
            r.unwrap();
            continue;
        }
        assert_eq!(r.unwrap_err().code, "42501", "{sql}");
        // The extended protocol is refused alike.
        assert_eq!(
            a.extended(sql, &[]).await.unwrap().unwrap_err().code,
            "42501",
            "{sql}"
        );
    }
    // What clients send on connect is accepted.
    for sql in [
        "SET search_path TO lake",
        "SET statement_timeout = 5000",
        "SET application_name = 'superset'",
        "SET client_encoding = 'UTF8'",
        "SET datestyle = 'ISO'",
        "SET TIME ZONE 'UTC'",
        "SET extra_float_digits = 3",
    ] {
        a.simple(sql)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // A setting made on one connection is not another's.
    let mut b = PgClient::trusted(addr).await.unwrap();
    let show = |rows: skystream_tests::pg::Rows| rows[0][0].clone().unwrap_or_default();
    assert_eq!(
        show(a.simple("SHOW application_name").await.unwrap().unwrap()),
        "superset"
    );
    assert_ne!(
        show(b.simple("SHOW application_name").await.unwrap().unwrap()),
        "superset"
    );
    // The memory limit still holds for everyone, and information_schema still answers.
    let big = "SELECT count(DISTINCT v) FROM (SELECT value * 7919 AS v FROM generate_series(1, 30000000))";
    assert_eq!(b.simple(big).await.unwrap().unwrap_err().code, "53200");
    b.simple("SELECT count(*) FROM information_schema.tables")
        .await
        .unwrap()
        .unwrap();
    assert_healthy(&s, "settings attacks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_statement_time_limits_hold() {
    let s = Served::start(&["--sql-memory-mb", "512", "--memory-limit-mb", "256"]);
    let addr = s.sql.unwrap();
    let mut c = PgClient::trusted(addr).await.unwrap();
    // A 2 GB string: refused before it is built.
    let r = c
        .simple("select length(repeat('xxxxxxxxxx', 200000000))")
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().code, "54000");
    assert!(
        s.peak_rss() < 1 << 30,
        "peak RSS {} MiB",
        s.peak_rss() >> 20
    );
    // The statement timeout covers execution in the extended protocol and cursors.
    c.simple("SET statement_timeout = 1000")
        .await
        .unwrap()
        .unwrap();
    let slow = "SELECT count(*) FROM generate_series(1, 1000000) a CROSS JOIN generate_series(1, 1000000) b WHERE a.value + b.value = $1";
    let started = Instant::now();
    let r = c.extended(slow, &["3"]).await.unwrap();
    assert_eq!(r.unwrap_err().code, "57014");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let r = c
        .simple(&format!(
            "DECLARE cur CURSOR FOR {}",
            slow.replace("$1", "3")
        ))
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().code, "57014");
    // A cursor over a quick query works, and FETCH reads its rows.
    c.simple("DECLARE ok CURSOR FOR SELECT value FROM generate_series(1, 5)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.simple("FETCH 2 FROM ok").await.unwrap().unwrap().len(), 2);

    // repeat() in a pipeline fails that pipeline alone, with the limit's name.
    let q = "CREATE TABLE posts WITH (connector = 'synthetic', duration = '10m');
             CREATE TABLE out WITH (connector = 'stdout');
             INSERT INTO out SELECT length(repeat(text, 1000000)) AS n FROM posts";
    let (st, p) = create(&s, "repeat", q).await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap();
    let v = wait_pipeline(&s, id, Duration::from_secs(30), |v| v["state"] == "failed").await;
    assert!(
        v["error"].as_str().unwrap().contains("max_value_bytes"),
        "{v}"
    );
    assert!(
        s.peak_rss() < 1 << 30,
        "peak RSS {} MiB",
        s.peak_rss() >> 20
    );
    assert_healthy(&s, "memory and time attacks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_guessing_are_bounded() {
    let mut s = Served::start(&[
        "--token",
        "right-token",
        "--max-connections",
        "256",
        "--sql-max-connections",
        "64",
    ]);
    let http: SocketAddr = s.http.trim_start_matches("http://").parse().unwrap();
    let sql = s.sql.unwrap();
    // Thousands of idle connections on each endpoint, no token, no login.
    let mut idle = Vec::new();
    for target in [http, sql] {
        for _ in 0..8000 {
            match std::net::TcpStream::connect(target) {
                Ok(c) => idle.push(c),
                Err(e) => panic!("connect {target}: {e} after {} connections", idle.len()),
            }
        }
    }
    assert!(s.alive());
    assert_live(&s, "16,000 idle connections").await;
    let mut c = PgClient::trusted(sql).await.unwrap();
    assert_eq!(c.simple("SELECT 1").await.unwrap().unwrap().len(), 1);
    drop(idle);

    // Wrong tokens: after a few, the address is locked out (429 with Retry-After).
    let http_client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..40 {
        let r = http_client
            .get(format!("{}/api/v1/pipelines", s.http))
            .bearer_auth(format!("guess-{i}"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status());
    }
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(unauthorized <= 5 && limited >= 35, "{statuses:?}");
    // Health checks need no token and are not locked out.
    let r = http_client
        .get(format!("{}/healthz", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(s);

    // The SQL endpoint with a password: SCRAM-SHA-256, and wrong passwords locked out.
    let s = Served::start(&["--sql-password", "right-password"]);
    let sql = s.sql.unwrap();
    let (_, auth) = PgClient::start(sql, "skystream").await.unwrap();
    assert!(
        matches!(&auth, Ok(AuthRequest::Sasl(m)) if m.iter().any(|m| m == "SCRAM-SHA-256")),
        "{auth:?}"
    );
    let psql = |password: &str| {
        let out = std::process::Command::new("psql")
            .args(["-X", "-w", "-A", "-t", "-c", "SELECT 42"])
            .arg(format!(
                "host={} port={} user=skystream dbname=skystream connect_timeout=5",
                sql.ip(),
                sql.port()
            ))
            .env("PGPASSWORD", password)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(psql("right-password"), (true, "42".to_string()));
    let mut locked = 0;
    for i in 0..20 {
        let (ok, msg) = psql(&format!("wrong-{i}"));
        assert!(!ok);
        if msg.contains("too many failed logins") {
            locked += 1;
        }
    }
    assert!(
        locked >= 10,
        "{locked} of 20 wrong passwords were locked out"
    );
}

/// Produces `payloads` to a fresh topic; returns the topic.
async fn topic_of(payloads: &[Vec<u8>]) -> String {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let bootstrap = kafka();
    let topic = unique_topic("hostile");
    create_topic(&bootstrap, &topic, 1).await;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    for p in payloads {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic).payload(p),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    topic
}

fn post_event(time_us: i64, text: &str, tags: &[String]) -> Vec<u8> {
    let facets: Vec<Value> = tags
        .iter()
        .map(|t| json!({"index": {"byteStart": 0, "byteEnd": 1}, "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": t}]}))
        .collect();
    serde_json::to_vec(&json!({
        "did": "did:plc:hostile",
        "time_us": time_us,
        "kind": "commit",
        "commit": {
            "rev": "x", "operation": "create", "collection": "app.bsky.feed.post",
            "rkey": format!("r{time_us}"), "cid": "c",
            "record": {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-12-01T00:00:00Z",
                       "langs": ["en"], "facets": facets}
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_event_times_and_huge_posts_are_skipped_or_bounded() {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let mut events = Vec::new();
    // Two minutes of posts, with a post stamped i64::MAX in the middle.
    for i in 0..240 {
        let t = now_us - 600_000_000 + i * 500_000;
        events.push(post_event(t, "hello world", &[]));
        if i == 120 {
            events.push(post_event(i64::MAX, "from the future", &[]));
        }
    }
    // 100,000 distinct words and 3,000 tags in one post (900 KB), and a post over the 1 MiB a
    // record may have.
    let words: Vec<String> = (0..100_000).map(|i| format!("w{i}")).collect();
    let tags: Vec<String> = (0..3_000).map(|i| format!("t{i}")).collect();
    events.push(post_event(now_us - 480_000_000, &words.join(" "), &tags));
    events.push(post_event(
        now_us - 480_000_000,
        &"x".repeat(1_100_000),
        &[],
    ));
    let topic = topic_of(&events).await;

    let s = Served::start(&[]);
    let q = format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'kafka', bootstrap_servers = '{}', topic = '{topic}', format = 'jetstream',
               bounded = 'latest', partitions = '0', start = 'earliest');
         CREATE TABLE out WITH (connector = 'stdout', format = 'json');
         INSERT INTO out SELECT win['end'] AS e, n, kw, tags FROM (
           SELECT count(*) AS n, max(cardinality(keywords(text))) AS kw,
                  max(cardinality(hashtags)) AS tags, tumble(INTERVAL '1' MINUTE) AS win
           FROM posts GROUP BY win)",
        kafka()
    );
    let (st, p) = create(&s, "hostile", &q).await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap();
    let v = wait_pipeline(&s, id, Duration::from_secs(120), |v| {
        matches!(v["state"].as_str(), Some("finished" | "failed"))
    })
    .await;
    assert_eq!(v["state"], "finished", "{v:#}");
    let m = &v["metrics"];
    assert_eq!(m["ahead_rows"], 1, "{m:#}");
    assert_eq!(
        m["late_rows"], 0,
        "every post after the one from year 2262 is kept: {m:#}"
    );
    assert_eq!(m["malformed"], 1, "the 1.1 MB post is skipped: {m:#}");
    assert_eq!(m["rows_in"], 242, "{m:#}");
    assert_healthy(&s, "hostile events").await;
}

/// A connector whose source or sink panics (not one a server ships: the in-process server of
/// the test below registers it).
struct Panicky;

fn panicky_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    std::sync::Arc::new(Schema::new(vec![
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        ),
        Field::new("x", DataType::Int64, false),
    ]))
}

struct PanickySource;

impl skystream_engine::source::Source for PanickySource {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        panicky_schema()
    }

    fn run(
        self: Box<Self>,
        ctx: skystream_engine::source::SourceContext,
    ) -> futures::future::BoxFuture<'static, skystream_engine::Result<()>> {
        Box::pin(async move {
            let _ = ctx;
            panic!("the source broke down");
        })
    }
}

struct PanickySink;

impl skystream_engine::sink::Sink for PanickySink {
    fn write(
        &mut self,
        _batch: arrow::array::RecordBatch,
    ) -> futures::future::BoxFuture<'_, skystream_engine::Result<()>> {
        panic!("the sink broke down");
    }
}

/// Two rows, then nothing (the columns `projection` of the schema).
struct Counter(Vec<usize>);

impl skystream_engine::source::Source for Counter {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        std::sync::Arc::new(panicky_schema().project(&self.0).unwrap())
    }

    fn run(
        self: Box<Self>,
        ctx: skystream_engine::source::SourceContext,
    ) -> futures::future::BoxFuture<'static, skystream_engine::Result<()>> {
        use arrow::array::{Int64Array, TimestampNanosecondArray};
        Box::pin(async move {
            let batch = arrow::array::RecordBatch::try_new(
                panicky_schema(),
                vec![
                    std::sync::Arc::new(TimestampNanosecondArray::from(vec![1, 2])),
                    std::sync::Arc::new(Int64Array::from(vec![1, 2])),
                ],
            )
            .unwrap()
            .project(&self.0)
            .unwrap();
            let _ = ctx
                .send(skystream_engine::source::SourceEvent::Batch {
                    batch,
                    split: 0,
                    position: None,
                })
                .await;
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

impl skystream_engine::connector::Connector for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn description(&self) -> &str {
        "test: a source (role = 'source') or sink that panics"
    }
    fn is_source(&self) -> bool {
        true
    }
    fn is_sink(&self) -> bool {
        true
    }
    fn source_schema(
        &self,
        _table: &skystream_engine::connector::TableDef,
    ) -> skystream_engine::Result<arrow::datatypes::SchemaRef> {
        Ok(panicky_schema())
    }
    fn create_source(
        &self,
        table: &skystream_engine::connector::TableDef,
        projection: &[usize],
    ) -> skystream_engine::Result<Box<dyn skystream_engine::source::Source>> {
        Ok(if table.options.get("mode") == Some("count") {
            Box::new(Counter(projection.to_vec()))
        } else {
            Box::new(PanickySource)
        })
    }
    fn validate_sink(
        &self,
        _table: &skystream_engine::connector::TableDef,
        _schema: &arrow::datatypes::SchemaRef,
    ) -> skystream_engine::Result<()> {
        Ok(())
    }
    fn create_sink(
        &self,
        _table: &skystream_engine::connector::TableDef,
        _schema: arrow::datatypes::SchemaRef,
    ) -> skystream_engine::Result<Box<dyn skystream_engine::sink::Sink>> {
        Ok(Box::new(PanickySink))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_a_pipeline_fails_that_pipeline_alone() {
    use skystream_api::{ApiConfig, ManagerConfig, Sandbox, Server};
    let mut registry = skystream_registry::registry();
    registry.register(std::sync::Arc::new(Panicky));
    let dir = std::env::temp_dir().join(unique_topic("panic"));
    let cfg = ApiConfig {
        manager: ManagerConfig {
            data_dir: dir,
            sandbox: Sandbox::open(),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = Server::start("127.0.0.1:0", cfg, registry).await.unwrap();
    let base = format!("http://{}", server.addr);
    let c = client();
    let mut ids = Vec::new();
    for (name, q, says) in [
        (
            "source",
            "CREATE TABLE src WITH (connector = 'panicky');
             CREATE TABLE out WITH (connector = 'stdout');
             INSERT INTO out SELECT x FROM src",
            "the source broke down",
        ),
        (
            "sink",
            "CREATE TABLE src WITH (connector = 'panicky', mode = 'count');
             CREATE TABLE out WITH (connector = 'panicky', type = 'sink');
             INSERT INTO out SELECT x FROM src",
            "the sink broke down",
        ),
    ] {
        let (st, p) = post(
            &c,
            &format!("{base}/api/v1/pipelines"),
            json!({ "name": name, "query": q }),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{p}");
        ids.push((p["id"].as_str().unwrap().to_string(), says));
    }
    for (id, says) in ids {
        let url = format!("{base}/api/v1/pipelines/{id}");
        let failed = wait_for(Duration::from_secs(30), || async {
            get(&c, &url).await.1["state"] == "failed"
        })
        .await;
        let (_, v) = get(&c, &url).await;
        assert!(failed, "{v:#}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("panicked") && e.contains(says), "{e}");
    }
    // The server goes on.
    let r = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, v) = post(
        &c,
        &format!("{base}/api/v1/validate"),
        json!({ "query": NORMAL }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    server.stop().await.unwrap();
}
