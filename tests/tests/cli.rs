//! The API's command-line client (`skystream submit | pipelines | tail | stop | start | delete`)
//! as a user runs it: the built binary against an in-process server that wants a token.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use skystream_tests::serve::{start_api, wait_for};
use skystream_tests::services::unique_topic;
use skystream_tests::skystream_bin;

const TOKEN: &str = "cli-test-token";

/// Keyword counts per 1-minute window of a paced synthetic firehose, to stdout; `${rate}` and
/// `${duration}` come from `--set`.
const SCRIPT: &str = "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)
  WITH (connector = 'synthetic', rate = '${rate:20}', speed = '300', duration = '${duration:3h}', seed = '3');
CREATE TABLE counts_out WITH (connector = 'stdout', format = 'json');
INSERT INTO counts_out
SELECT win['end'] AS window_end, keyword, n FROM (
  SELECT keyword, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS win
  FROM (SELECT unnest(keywords(text)) AS keyword, event_time FROM posts)
  GROUP BY keyword, win)";

struct Cli {
    base: String,
    dir: PathBuf,
}

impl Cli {
    /// Runs `skystream ARGS --server .. --token ..` to its end.
    async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || c.output().expect("skystream runs"))
            .await
            .unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(skystream_bin());
        c.args(args)
            .env("SKYSTREAM_SERVER", &self.base)
            .env("SKYSTREAM_API_TOKEN", TOKEN)
            .current_dir(&self.dir);
        c
    }

    /// Waits (on `skystream pipelines --json`) until pipeline `name` is in `state`.
    async fn wait_state(&self, name: &str, state: &str) -> bool {
        wait_for(Duration::from_secs(60), || async {
            let o = self.run(&["pipelines", "--json"]).await;
            let list: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            list.as_array()
                .is_some_and(|l| l.iter().any(|p| p["name"] == name && p["state"] == state))
        })
        .await
    }

    /// Runs `skystream tail ARGS` until it printed `n` lines, then stops it.
    async fn tail_lines(&self, args: &[&str], n: usize) -> Vec<String> {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || {
            let mut child = c
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let out = BufReader::new(child.stdout.take().unwrap());
            let lines: Vec<String> = out.lines().take(n).map(Result::unwrap).collect();
            child.kill().ok();
            child.wait().ok();
            lines
        })
        .await
        .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::write(dir.join(name), body).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_list_tail_stop_start_delete() {
    let dir = std::env::temp_dir().join(format!("skystream-cli-{}", unique_topic("cli")));
    std::fs::create_dir_all(&dir).unwrap();
    let (server, base) = start_api(dir.join("data"), Some(TOKEN)).await;
    let cli = Cli {
        base,
        dir: dir.clone(),
    };
    write(&dir, "counts.sql", SCRIPT);
    write(
        &dir,
        "bad.sql",
        &SCRIPT.replace("keywords(text)", "keywords(txt)"),
    );

    // Nothing yet.
    let out = ok(&cli.run(&["pipelines"]).await);
    assert!(out.contains("no pipelines"), "{out}");

    // A wrong token is refused, and says why.
    let o = cli.run(&["pipelines", "--token", "wrong"]).await;
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("bearer token"),
        "{}",
        text(&o.stderr)
    );

    // A query error points at the text: file, line and column, and a caret under `txt`.
    let o = cli.run(&["submit", "bad.sql"]).await;
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("txt"), "{err}");
    assert!(err.contains("--> bad.sql:7:"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("| ") && l.contains("keywords(txt)"))
        .unwrap_or_else(|| panic!("no SQL line in {err}"));
    let caret = lines[at + 1];
    let col = caret.find('^').expect("a caret line");
    assert_eq!(&lines[at][col..col + 3], "txt", "{err}");
    // --validate checks without submitting.
    let out = ok(&cli.run(&["submit", "counts.sql", "--validate"]).await);
    assert!(out.contains("ok: writes counts_out"), "{out}");

    // Submit with a placeholder set; it runs.
    let out = ok(&cli
        .run(&[
            "submit",
            "counts.sql",
            "--set",
            "rate=30",
            "--checkpoint-interval",
            "1",
        ])
        .await);
    assert!(out.starts_with("counts (id "), "{out}");
    assert!(out.contains("starting") || out.contains("running"), "{out}");
    assert!(
        cli.wait_state("counts", "running").await,
        "counts never ran"
    );
    // The same name again: refused by the server, its message shown.
    let o = cli.run(&["submit", "counts.sql"]).await;
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("exists"), "{}", text(&o.stderr));

    let out = ok(&cli.run(&["pipelines"]).await);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("STATE"),
        "{out}"
    );
    assert!(out.contains("counts") && out.contains("running"), "{out}");
    let list: Value = serde_json::from_str(&ok(&cli.run(&["pipelines", "--json"]).await)).unwrap();
    assert_eq!(list[0]["params"]["rate"], "30", "{list}");

    // Tail by name: JSON lines, one row each, columns as the query names them.
    let lines = cli.tail_lines(&["tail", "counts", "--json"], 3).await;
    assert_eq!(lines.len(), 3);
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert_eq!(v["table"], "counts_out", "{l}");
        assert!(v["row"]["keyword"].is_string(), "{l}");
        assert!(v["row"]["n"].as_i64().unwrap() >= 1, "{l}");
        let keys: Vec<&str> = l.split("\"row\":{").nth(1).unwrap().split(',').collect();
        assert!(keys[0].starts_with("\"window_end\""), "{l}");
    }
    // As a table: the sink's name, then a header in the query's column order.
    let lines = cli.tail_lines(&["tail", "counts"], 3).await;
    assert_eq!(lines[0], "-- counts_out");
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols, ["window_end", "keyword", "n"], "{lines:?}");

    // Stop, start and delete by name.
    let out = ok(&cli.run(&["stop", "counts"]).await);
    assert!(out.contains("stopped"), "{out}");
    let o = cli.run(&["stop", "counts"]).await;
    assert!(!o.status.success(), "stopping twice is refused");
    let out = ok(&cli.run(&["start", "counts"]).await);
    assert!(out.contains("starting") || out.contains("running"), "{out}");
    assert!(
        cli.wait_state("counts", "running").await,
        "counts never ran again"
    );
    let out = ok(&cli.run(&["delete", "counts"]).await);
    assert!(out.contains("deleted"), "{out}");
    let o = cli.run(&["delete", "counts"]).await;
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("no pipeline"),
        "{}",
        text(&o.stderr)
    );

    // A finite pipeline: tail prints its rows and returns when it finishes.
    let out = ok(&cli
        .run(&[
            "submit",
            "counts.sql",
            "--name",
            "short",
            "--set",
            "duration=3m",
        ])
        .await);
    assert!(out.starts_with("short (id "), "{out}");
    let o = cli.run(&["tail", "short"]).await;
    ok(&o);
    let err = text(&o.stderr);
    assert!(err.contains("short: finished"), "{err}");

    // The server is gone: a clear error, no hang.
    server.stop().await.unwrap();
    let o = cli.run(&["pipelines"]).await;
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("cannot reach the server"),
        "{}",
        text(&o.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}
