//! Schemathesis (PyPI) against the server's own OpenAPI document: every operation is called with
//! examples, boundary values and random data, valid and invalid, and every check schemathesis
//! has must pass — no 5xx, every status, content type and body as documented, invalid input
//! refused, the bearer token enforced. scripts/services.sh installs schemathesis and sets
//! SKYSTREAM_SCHEMATHESIS. tests/schemathesis.toml holds the one setting: SQL that does not plan
//! may be refused with 400 although the request fits the schema.

use std::process::Command;

use serde_json::json;
use skystream_tests::serve::start_api;
use skystream_tests::services::unique_topic;

const TOKEN: &str = "schemathesis-token";

fn schemathesis() -> String {
    std::env::var("SKYSTREAM_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let dir = std::env::temp_dir().join(format!("skystream-api-{}", unique_topic("st")));
    let (server, base) = start_api(dir.clone(), Some(TOKEN)).await;

    // A running pipeline, so lists, trends and metrics have something to show.
    let query = "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
        WITH (connector = 'synthetic', rate = '20', speed = '300', duration = '3h', seed = '3');
        CREATE TABLE out WITH (connector = 'stdout', format = 'json');
        INSERT INTO out SELECT win['end'] AS window_end, keyword, n FROM (
            SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
            FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
            GROUP BY keyword, win)";
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/pipelines"))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": "counts", "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);

    let report = dir.join("schemathesis");
    let bin = schemathesis();
    let out = tokio::task::spawn_blocking({
        let base = base.clone();
        let report = report.clone();
        move || {
            Command::new(&bin)
                .arg("--config-file")
                .arg(skystream_tests::repo_root().join("tests/schemathesis.toml"))
                .arg("run")
                .arg(format!("{base}/api/v1/openapi.json"))
                .args(["--url", &base])
                .args(["--checks", "all"])
                .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
                .args(["--max-examples", "40", "--seed", "1", "--workers", "2"])
                .args(["--request-timeout", "20"])
                .args(["--report", "junit"])
                .arg("--report-dir")
                .arg(&report)
                .env("NO_COLOR", "1")
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run {bin} (pip install schemathesis, or source scripts/services.sh): {e}")
                })
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    server.stop().await.unwrap();
}
