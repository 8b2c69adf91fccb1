//! The HTTP API (`skystream serve`) at the HTTP level: every endpoint, its errors (always JSON),
//! the sandbox, the bearer token, trends from the engine and from Redis, and pipelines that
//! survive a server restart. The server runs in-process on a loopback port; Redis is the suite's
//! (scripts/services.sh).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use skystream_api::{ApiConfig, ManagerConfig, Sandbox, Server};
use skystream_tests::http::{get, post};
use skystream_tests::services::unique_topic;

fn data_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("skystream-api-{}", unique_topic(name)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(dir: PathBuf) -> ApiConfig {
    ApiConfig {
        manager: ManagerConfig {
            data_dir: dir,
            max_pipelines: 3,
            idle_timeout: Duration::from_secs(5),
            sandbox: Sandbox::default(),
            memory_limit: Some(256 << 20),
            ..Default::default()
        },
        token: None,
        body_limit: 64 << 10,
        trends_redis: None,
        ..Default::default()
    }
}

async fn start(cfg: ApiConfig) -> (Server, String) {
    let s = Server::start("127.0.0.1:0", cfg, skystream_registry::registry())
        .await
        .expect("server starts");
    let base = format!("http://{}", s.addr);
    (s, base)
}

/// Keyword counts over 1-minute tumbling windows of a paced synthetic firehose (a window about
/// every 0.2 s), written to `sink`.
fn query(sink: &str, insert: &str) -> String {
    format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
         WITH (connector = 'synthetic', rate = '20', speed = '300', duration = '3h', seed = '3');
         CREATE TABLE out WITH ({sink});
         {insert}"
    )
}

const COUNTS: &str = "INSERT INTO out SELECT win['end'] AS window_end, keyword, n FROM (
    SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
    FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
    GROUP BY keyword, win)";

fn counts_to_stdout() -> String {
    query("connector = 'stdout', format = 'json'", COUNTS)
}

/// Submits a pipeline (it must be accepted); returns its id.
async fn create(c: &reqwest::Client, base: &str, name: &str, query: &str) -> String {
    let (st, p) = post(
        c,
        &format!("{base}/api/v1/pipelines"),
        json!({ "name": name, "query": query }),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    p["id"].as_str().unwrap().to_string()
}

/// A body as text (Prometheus metrics, an event stream that ends).
async fn get_text(c: &reqwest::Client, url: &str) -> String {
    c.get(url).send().await.unwrap().text().await.unwrap()
}

/// Polls pipeline `id` until `ok` holds (or panics after 20 s).
async fn wait_for(c: &reqwest::Client, base: &str, id: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = get(c, &format!("{base}/api/v1/pipelines/{id}")).await;
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < until, "timed out; last state: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_over_http_from_submit_to_delete() {
    let (server, base) = start(config(data_dir("life"))).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/api/v1");

    let (st, v) = post(
        &c,
        &format!("{api}/validate"),
        json!({ "query": counts_to_stdout() }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["outputs"], json!(["out"]));
    assert!(v["plan"].as_str().unwrap().contains("window"), "{v}");

    let (st, p) = post(
        &c,
        &format!("{api}/pipelines"),
        json!({ "name": "counts", "query": counts_to_stdout(), "checkpoint_interval": 0.3 }),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["name"], "counts");
    // `starting` until the run has restored its checkpoint and started its sinks.
    assert!(
        matches!(p["state"].as_str(), Some("starting" | "running")),
        "{p}"
    );

    // The output as Server-Sent Events: rows of whole windows.
    let r = c
        .get(format!("{api}/pipelines/{id}/output"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let until = Instant::now() + Duration::from_secs(20);
    while !text.contains("\n\n") || !text.contains("data: ") {
        let chunk = tokio::time::timeout_at(until.into(), body.next())
            .await
            .expect("an event within 20 s")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert!(text.contains("event: rows"), "{text}");
    let ev: Value = serde_json::from_str(data).unwrap();
    assert_eq!(ev["table"], "out");
    let row = &ev["rows"][0];
    assert!(
        row["keyword"].is_string() && row["n"].is_number() && row["window_end"].is_string(),
        "{row}"
    );
    // `body` stays open: it ends when the pipeline stops (below).

    // State and counters: rows through each operator, watermark, a checkpoint.
    let v = wait_for(&c, &base, &id, |v| {
        v["metrics"]["last_checkpoint"]["epoch"].as_u64() >= Some(2)
            && v["metrics"]["windows_emitted"].as_u64() >= Some(2)
    })
    .await;
    let m = &v["metrics"];
    assert!(m["rows_in"].as_u64().unwrap() > 0 && m["rows_out"].as_u64().unwrap() > 0);
    assert!(m["watermark"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m["late_rows"], 0);
    let ops: Vec<&str> = m["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operator"].as_str().unwrap())
        .collect();
    assert!(ops.iter().any(|o| o.ends_with(":window")), "{ops:?}");
    assert!(ops.last().unwrap().ends_with(":sink"), "{ops:?}");
    let window_op = m["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operator"].as_str().unwrap().ends_with(":window"))
        .unwrap();
    assert!(window_op["rows_in"].as_u64().unwrap() > 0);

    // The list, trends from the engine (the newest window's counts), Prometheus metrics.
    let (st, list) = get(&c, &format!("{api}/pipelines")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (st, t) = get(&c, &format!("{api}/trends?limit=3")).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(t["source"], "engine");
    let trends = t["trends"].as_array().unwrap();
    assert_eq!(trends.len(), 3, "{t}");
    assert!(trends[0]["score"].as_f64() >= trends[2]["score"].as_f64());
    assert_eq!(trends[0]["rank"], 1);
    let w = t["window_end_ms"].as_i64().unwrap();
    let (_, same) = get(&c, &format!("{api}/trends?limit=3&window={w}")).await;
    assert_eq!(same["window_end_ms"], w);
    let metrics = get_text(&c, &format!("{base}/metrics")).await;
    assert!(metrics.contains("skystream_pipelines{state=\"running\"} 1"));
    assert!(metrics.contains(&format!(
        "skystream_pipeline_rows_in_total{{id=\"{id}\",name=\"counts\"}}"
    )));
    assert!(metrics.contains("skystream_operator_rows_total{"));

    // Stop (last checkpoint), stop again (409), start (resumes from it), delete, gone.
    let (st, v) = post(&c, &format!("{api}/pipelines/{id}/stop"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "stopped");
    let stopped_at = v["metrics"]["last_checkpoint"]["epoch"].as_u64().unwrap();
    // The open output stream ended with the run: the rest of its rows, then `end`.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        while let Some(chunk) = body.next().await {
            rest.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(rest).unwrap()
    })
    .await
    .expect("the output stream ends when the pipeline stops");
    assert!(
        rest.trim_end()
            .ends_with("event: end\ndata: {\"state\":\"stopped\"}"),
        "{}",
        rest.get(rest.len().saturating_sub(300)..).unwrap_or(&rest)
    );
    // The output of a pipeline that is not running is an `end` event, and the stream closes.
    let text = get_text(&c, &format!("{api}/pipelines/{id}/output")).await;
    assert_eq!(
        text.trim(),
        "event: end\ndata: {\"state\":\"stopped\"}",
        "{text}"
    );
    let (st, e) = post(&c, &format!("{api}/pipelines/{id}/stop"), json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(e["error"].as_str().unwrap().contains("stopped"));
    let (st, v) = post(&c, &format!("{api}/pipelines/{id}/start"), json!({})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(
        matches!(v["state"].as_str(), Some("starting" | "running")),
        "{v}"
    );
    // The run restores its last checkpoint as it starts: once it shows `running`, it has.
    let v = wait_for(&c, &base, &id, |v| v["state"] != "starting").await;
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["metrics"]["restored_epoch"], stopped_at);
    let (st, e) = post(&c, &format!("{api}/pipelines/{id}/start"), json!({})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{e}");
    let r = c
        .delete(format!("{api}/pipelines/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, e) = get(&c, &format!("{api}/pipelines/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(e["error"].as_str().unwrap().contains(&id));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_status_and_position() {
    let (server, base) = start(config(data_dir("errors"))).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/api/v1");
    let validate = |q: String| {
        let c = c.clone();
        let url = format!("{api}/validate");
        async move { post(&c, &url, json!({ "query": q })).await }
    };

    // Invalid SQL: 400, the position of the fault.
    let (st, e) =
        validate("CREATE TABLE posts WITH (connector = 'synthetic');\nSELEC 1".into()).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("SELEC"), "{e}");
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(2), Some(1))
    );
    // An unknown column, with its position.
    let (st, e) =
        validate(counts_to_stdout().replace("unnest(keywords(text))", "unnest(keywords(txt))"))
            .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("txt"), "{e}");
    assert!(e["line"].as_u64().is_some(), "{e}");
    // Unknown connector, unknown option: named.
    let (st, e) = validate(query("connector = 'nosuch'", COUNTS)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("nosuch"), "{e}");
    let (st, e) = validate(query("connector = 'stdout', colour = 'red'", COUNTS)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("colour"), "{e}");

    // Bodies: not JSON, malformed JSON, unknown fields, too large.
    let r = c
        .post(format!("{api}/validate"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = c
        .post(format!("{api}/pipelines"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let (st, e) = post(
        &c,
        &format!("{api}/pipelines"),
        json!({"name": "a", "query": "x", "extra": 1}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("extra"), "{e}");
    let (st, e) = validate("-- ".to_string() + &"x".repeat(100 << 10)).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    // Bad names and intervals.
    let (st, e) = post(
        &c,
        &format!("{api}/pipelines"),
        json!({"name": "a b", "query": counts_to_stdout()}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("name"), "{e}");
    let (st, _) = post(
        &c,
        &format!("{api}/pipelines"),
        json!({"name": "a", "query": counts_to_stdout(), "checkpoint_interval": -1}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Unknown ids and routes, wrong methods, bad parameters.
    for (method, path) in [
        ("GET", "/pipelines/nope"),
        ("POST", "/pipelines/nope/stop"),
        ("POST", "/pipelines/nope/start"),
        ("DELETE", "/pipelines/nope"),
        ("GET", "/pipelines/nope/output"),
        ("GET", "/trends?pipeline=nope"),
        ("GET", "/nowhere"),
    ] {
        let r = c
            .request(method.parse().unwrap(), format!("{api}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert!(
            r.json::<Value>().await.unwrap()["error"].is_string(),
            "{method} {path}"
        );
    }
    let r = c.put(format!("{api}/pipelines")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    for q in ["limit=0", "limit=abc", "window=soon"] {
        let (st, e) = get(&c, &format!("{api}/trends?{q}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {e}");
    }

    // A name is unique; the cap (3 here) holds.
    let mut ids = Vec::new();
    for i in 0..3 {
        let (st, p) = post(
            &c,
            &format!("{api}/pipelines"),
            json!({"name": format!("p{i}"), "query": counts_to_stdout()}),
        )
        .await;
        assert_eq!(st, StatusCode::CREATED, "{p}");
        ids.push(p["id"].as_str().unwrap().to_string());
    }
    let (st, e) = post(
        &c,
        &format!("{api}/pipelines"),
        json!({"name": "p0", "query": counts_to_stdout()}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(e["error"].as_str().unwrap().contains("p0"), "{e}");
    let (st, e) = post(
        &c,
        &format!("{api}/pipelines"),
        json!({"name": "p9", "query": counts_to_stdout()}),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(e["error"].as_str().unwrap().contains("maximum"), "{e}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_refuses_files_foreign_hosts_and_raw_settings() {
    let (server, base) = start(config(data_dir("sandbox"))).await;
    let c = reqwest::Client::new();
    let url = format!("{base}/api/v1/validate");
    let refused = [
        (
            "CREATE TABLE t WITH (connector = 'replay', path = '/etc/passwd');
             CREATE TABLE out WITH (connector = 'stdout'); INSERT INTO out SELECT * FROM t"
                .to_string(),
            "/etc/passwd",
        ),
        (
            query("connector = 'file', path = '/tmp/x.jsonl'", COUNTS),
            "/tmp/x.jsonl",
        ),
        (
            query("connector = 'lake', path = '/tmp/lake'", COUNTS),
            "/tmp/lake",
        ),
        (
            query(
                "connector = 'redis', url = 'redis://169.254.169.254:6379', layout = 'ranking', window = 'window_end', member = 'keyword', score = 'n'",
                COUNTS,
            ),
            "169.254.169.254",
        ),
        (
            query(
                "connector = 'kafka', bootstrap_servers = '127.0.0.1:9092', topic = 't', 'kafka.plugin.library.paths' = '/tmp/evil.so'",
                COUNTS,
            ),
            "kafka.plugin.library.paths",
        ),
        (query("connector = 'memory'", COUNTS), "memory"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'".to_string(),
            "",
        ),
        ("COPY (SELECT 1) TO '/tmp/out.csv'".to_string(), ""),
    ];
    for (q, named) in refused {
        let (st, e) = post(&c, &url, json!({ "query": q })).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "accepted: {q}");
        assert!(e["error"].as_str().unwrap().contains(named), "{q}: {e}");
    }
    // Loopback services are allowed.
    let ok = query(
        "connector = 'redis', url = 'redis://127.0.0.1:6379', layout = 'ranking', window = 'window_end', member = 'keyword', score = 'n'",
        COUNTS,
    );
    let (st, e) = post(&c, &url, json!({ "query": ok })).await;
    assert_eq!(st, StatusCode::OK, "{e}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_everything_but_health() {
    let mut cfg = config(data_dir("token"));
    cfg.token = Some("s3cret".into());
    let (server, base) = start(cfg).await;
    let c = reqwest::Client::new();
    for path in [
        "/api/v1/pipelines",
        "/api/v1/trends",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(r.json::<Value>().await.unwrap()["error"].is_string());
        let r = c
            .get(format!("{base}{path}"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let r = c
            .get(format!("{base}{path}"))
            .bearer_auth("s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let r = c
        .post(format!("{base}/api/v1/validate"))
        .json(&json!({"query": counts_to_stdout()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for path in ["/healthz", "/readyz"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // The OpenAPI document says so.
    let doc: Value = c
        .get(format!("{base}/api/v1/openapi.json"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["paths"]["/api/v1/pipelines"]["get"]["security"].is_array());
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_covers_every_endpoint() {
    let (server, base) = start(config(data_dir("openapi"))).await;
    let doc: Value = reqwest::get(format!("{base}/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/pipelines", "post"),
        ("/api/v1/pipelines", "get"),
        ("/api/v1/pipelines/{id}", "get"),
        ("/api/v1/pipelines/{id}", "delete"),
        ("/api/v1/pipelines/{id}/stop", "post"),
        ("/api/v1/pipelines/{id}/start", "post"),
        ("/api/v1/pipelines/{id}/output", "get"),
        ("/api/v1/validate", "post"),
        ("/api/v1/trends", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(paths[path][method].is_object(), "{method} {path} missing");
    }
    assert!(doc["components"]["schemas"]["PipelineView"].is_object());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_resume_after_a_server_restart() {
    let dir = data_dir("restart");
    let (server, base) = start(config(dir.clone())).await;
    let c = reqwest::Client::new();
    let (st, p) = post(
        &c,
        &format!("{base}/api/v1/pipelines"),
        json!({ "name": "survivor", "query": counts_to_stdout(), "checkpoint_interval": 0.2 }),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    // A second one, stopped: it stays stopped.
    let resting = create(&c, &base, "resting", &counts_to_stdout()).await;
    post(
        &c,
        &format!("{base}/api/v1/pipelines/{resting}/stop"),
        json!({}),
    )
    .await;
    wait_for(&c, &base, &id, |v| {
        v["metrics"]["last_checkpoint"]["epoch"].as_u64() >= Some(2)
    })
    .await;
    // A graceful shutdown takes a last checkpoint of every running pipeline.
    server.stop().await.unwrap();

    let (server, base) = start(config(dir)).await;
    let v = wait_for(&c, &base, &id, |v| {
        v["state"] == "running" && !v["metrics"]["restored_epoch"].is_null()
    })
    .await;
    let restored = v["metrics"]["restored_epoch"]
        .as_u64()
        .expect("resumed from a checkpoint");
    assert!(restored >= 2, "{v}");
    assert_eq!(v["name"], "survivor");
    let (_, r) = get(&c, &format!("{base}/api/v1/pipelines/{resting}")).await;
    assert_eq!(r["state"], "stopped", "{r}");
    // It carries on from where it was: its watermark moves past the restored one.
    let wm = v["metrics"]["watermark_ms"].as_i64();
    wait_for(&c, &base, &id, |x| {
        x["metrics"]["watermark_ms"].as_i64() > wm
    })
    .await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trends_are_read_from_redis_when_configured() {
    let redis =
        std::env::var("SKYSTREAM_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let key = unique_topic("trending");
    let mut cfg = config(data_dir("trends"));
    cfg.trends_redis = Some((redis.clone(), key.clone()));
    let (server, base) = start(cfg).await;
    let c = reqwest::Client::new();
    // Nothing ranked yet.
    let (st, t) = get(&c, &format!("{base}/api/v1/trends")).await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert_eq!(t["source"], "redis");
    assert!(t["window_end_ms"].is_null() && t["trends"].as_array().unwrap().is_empty());
    // A pipeline ranking keywords into Redis.
    let q = query(
        &format!(
            "connector = 'redis', url = '{redis}', layout = 'ranking', key = '{key}', window = 'window_end', member = 'keyword', score = 'n'"
        ),
        COUNTS,
    );
    create(&c, &base, "ranked", &q).await;
    let until = Instant::now() + Duration::from_secs(20);
    let t = loop {
        let (_, t) = get(&c, &format!("{base}/api/v1/trends?limit=5")).await;
        if t["trends"].as_array().is_some_and(|a| a.len() == 5) {
            break t;
        }
        assert!(Instant::now() < until, "no trends: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let scores: Vec<f64> = t["trends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // The same as Redis holds.
    let w = t["window_end_ms"].as_i64().unwrap();
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let top: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(format!("{key}:{w}"))
        .arg(0)
        .arg(4)
        .arg("REV")
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(t["trends"][0]["term"], top[0].0.as_str());
    assert_eq!(t["trends"][0]["score"].as_f64(), Some(top[0].1));
    server.stop().await.unwrap();

    // Redis unreachable: 503 with a JSON error, not a hang.
    let mut cfg = config(data_dir("trends-down"));
    cfg.trends_redis = Some(("redis://127.0.0.1:1".into(), key));
    let (server, base) = start(cfg).await;
    let (st, e) = get(&c, &format!("{base}/api/v1/trends")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert!(e["error"].as_str().unwrap().contains("Redis"), "{e}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_fails_alone() {
    let mut cfg = config(data_dir("memory"));
    cfg.manager.memory_limit = Some(16 << 20);
    let (server, base) = start(cfg).await;
    let c = reqwest::Client::new();
    let api = format!("{base}/api/v1");
    let light = create(&c, &base, "light", &counts_to_stdout()).await;
    // Every post its own group in one day-long window: the state grows with every post.
    let heavy_query =
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '1' SECOND)
         WITH (connector = 'synthetic', rate = '40', speed = 'max', count = '2000000',
               start = '2026-01-01T00:00:00Z');
         CREATE TABLE out WITH (connector = 'stdout', format = 'json');
         INSERT INTO out SELECT uri, text, count(*) AS n, tumble(INTERVAL '1' DAY) AS win
         FROM posts GROUP BY uri, text, win";
    let heavy = create(&c, &base, "heavy", heavy_query).await;

    let v = wait_for(&c, &base, &heavy, |v| {
        v["state"] != "running" && v["state"] != "starting"
    })
    .await;
    assert_eq!(v["state"], "failed", "{v}");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.starts_with("out of memory: operator 1:window of flow 'out'"),
        "{err}"
    );
    assert!(err.contains("memory limit of 16.0 MiB"), "{err}");

    // The other pipeline carries on, its state counted and well inside the limit; the server
    // answers.
    let (_, before) = get(&c, &format!("{api}/pipelines/{light}")).await;
    let emitted = before["metrics"]["windows_emitted"].as_u64();
    let v = wait_for(&c, &base, &light, |v| {
        v["metrics"]["windows_emitted"].as_u64() > emitted
    })
    .await;
    assert_eq!(v["state"], "running", "{v}");
    let bytes = v["metrics"]["state_bytes"].as_u64().unwrap();
    assert!(bytes > 0 && bytes < 16 << 20, "{bytes}");
    let (st, _) = get(&c, &format!("{base}/healthz")).await;
    assert_eq!(st, StatusCode::OK);
    let metrics = get_text(&c, &format!("{base}/metrics")).await;
    assert!(
        metrics.contains("skystream_pipelines{state=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("skystream_pipeline_state_bytes{{id=\"{light}\"")));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_fill_a_query_and_are_kept_with_it() {
    let dir = data_dir("params");
    let (server, base) = start(config(dir.clone())).await;
    let c = reqwest::Client::new();
    let q = counts_to_stdout().replace("seed = '3'", "seed = '${seed}'");
    // Without a value for ${seed}: a 400 naming it, for validate and submit alike.
    for (path, body) in [
        ("validate", json!({ "query": q })),
        ("pipelines", json!({ "name": "p", "query": q })),
    ] {
        let (st, e) = post(&c, &format!("{base}/api/v1/{path}"), body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        assert!(e["error"].as_str().unwrap().contains("${seed}"), "{e}");
    }
    let (st, v) = post(
        &c,
        &format!("{base}/api/v1/validate"),
        json!({ "query": q, "params": { "seed": "5" } }),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, p) = post(
        &c,
        &format!("{base}/api/v1/pipelines"),
        json!({ "name": "seeded", "query": q, "params": { "seed": "5" } }),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{p}");
    assert_eq!(p["params"]["seed"], "5", "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    wait_for(&c, &base, &id, |v| v["state"] == "running").await;
    server.stop().await.unwrap();
    // The definition keeps them: after a restart the pipeline plans and runs again.
    let (server, base) = start(config(dir)).await;
    let v = wait_for(&c, &base, &id, |v| v["state"] == "running").await;
    assert_eq!(v["params"]["seed"], "5", "{v}");
    server.stop().await.unwrap();
}
