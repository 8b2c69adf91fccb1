//! What cannot run on a stream fails at planning, naming the construct and where it is.

use skystream_tests::repo_root;

fn source() -> String {
    format!(
        "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND)\nWITH (connector = 'replay', path = '{}');\nCREATE TABLE out WITH (connector = 'memory');\n",
        repo_root()
            .join("testdata/jetstream/expected_v1.jsonl")
            .display()
    )
}

/// Plans `source() + body` and returns the error, its line relative to `body` and its column.
async fn plan_err(body: &str) -> (String, Option<u64>, Option<u64>) {
    let sql = format!("{}{body}", source());
    let reg = skystream_registry::registry();
    match skystream_sql::plan_script(&sql, &reg).await {
        Ok(_) => panic!("expected an error for:\n{body}"),
        Err(e) => (e.message.clone(), e.line.map(|l| l - 3), e.column),
    }
}

#[tokio::test]
async fn order_by_on_a_stream() {
    let (m, l, c) = plan_err("INSERT INTO out\nSELECT did FROM posts\n  ORDER BY did;").await;
    assert!(m.contains("ORDER BY"), "{m}");
    assert_eq!((l, c), (Some(3), Some(3)));
}

#[tokio::test]
async fn unwindowed_aggregate() {
    let (m, l, c) =
        plan_err("INSERT INTO out SELECT did, count(*)\nFROM posts\nGROUP BY did;").await;
    assert!(
        m.contains("GROUP BY over an unbounded stream") && m.contains("tumble"),
        "{m}"
    );
    assert_eq!((l, c), (Some(3), Some(1)));
    let (m, l, c) = plan_err("INSERT INTO out SELECT\n   count(*) FROM posts;").await;
    assert!(m.contains("count()") && m.contains("unbounded"), "{m}");
    assert_eq!((l, c), (Some(2), Some(4)));
}

#[tokio::test]
async fn over_on_a_raw_stream() {
    let (m, l, c) =
        plan_err("INSERT INTO out SELECT did, ROW_NUMBER() OVER (ORDER BY did) FROM posts;").await;
    assert!(m.contains("OVER"), "{m}");
    assert_eq!((l, c), (Some(1), Some(42)));
}

#[tokio::test]
async fn over_not_partitioned_by_the_window() {
    let (m, _, c) = plan_err(
        "INSERT INTO out SELECT * FROM (SELECT did, n, ROW_NUMBER() OVER (ORDER BY n) AS rn FROM (SELECT did, count(*) AS n, tumble(INTERVAL '1' MINUTE) AS w FROM posts GROUP BY did, w));",
    )
    .await;
    assert!(m.contains("PARTITION BY the window"), "{m}");
    assert!(c.is_some());
}

#[tokio::test]
async fn limit_join_and_distinct() {
    let (m, _, _) = plan_err("INSERT INTO out SELECT did FROM posts LIMIT 10;").await;
    assert!(m.contains("LIMIT"), "{m}");
    let (m, l, c) =
        plan_err("INSERT INTO out SELECT a.did FROM posts a\nJOIN posts b ON a.did = b.did;").await;
    assert!(m.contains("JOIN of unbounded streams"), "{m}");
    assert_eq!((l, c), (Some(2), Some(1)));
    let (m, _, _) = plan_err("INSERT INTO out SELECT DISTINCT did FROM posts;").await;
    assert!(m.contains("DISTINCT"), "{m}");
}

#[tokio::test]
async fn windows_need_event_time_and_fixed_intervals() {
    let sql = format!(
        "CREATE TABLE p WITH (connector = 'replay', path = '{}');\nCREATE TABLE out WITH (connector = 'memory');\nINSERT INTO out SELECT count(*), tumble(INTERVAL '1' MINUTE) AS w FROM p GROUP BY w;",
        repo_root()
            .join("testdata/jetstream/expected_v1.jsonl")
            .display()
    );
    let e = skystream_sql::plan_script(&sql, &skystream_registry::registry())
        .await
        .err()
        .expect("no watermark");
    assert!(e.message.contains("WATERMARK"), "{e}");
    assert_eq!(e.line, Some(3));
    let (m, _, _) = plan_err(
        "INSERT INTO out SELECT count(*), tumble(INTERVAL '1' MONTH) AS w FROM posts GROUP BY w;",
    )
    .await;
    assert!(
        m.contains("constant interval") || m.contains("month"),
        "{m}"
    );
    let (m, _, _) = plan_err("INSERT INTO out SELECT count(*), hop(INTERVAL '2' MINUTE, INTERVAL '5' MINUTE) AS w FROM posts GROUP BY w;").await;
    assert!(m.contains("must be a multiple of the slide"), "{m}");
    let (m, l, c) =
        plan_err("INSERT INTO out SELECT did,\n  tumble(INTERVAL '1' MINUTE) FROM posts;").await;
    assert!(m.contains("only be used in GROUP BY"), "{m}");
    assert_eq!((l, c), (Some(2), Some(3)));
}

#[tokio::test]
async fn unknown_column_function_connector_and_option() {
    let (m, l, c) = plan_err("INSERT INTO out SELECT\n  nosuchcol FROM posts;").await;
    assert!(m.contains("nosuchcol"), "{m}");
    assert_eq!((l, c), (Some(2), Some(3)));
    let (m, _, _) = plan_err("INSERT INTO out SELECT nosuchfn(did) FROM posts;").await;
    assert!(m.contains("nosuchfn"), "{m}");
    let (m, l, _) = plan_err(
        "CREATE TABLE x WITH (connector = 'kafkaa');\nINSERT INTO x SELECT did FROM posts;",
    )
    .await;
    assert!(m.contains("unknown connector 'kafkaa'"), "{m}");
    assert_eq!(l, Some(1));
    let (m, _, _) = plan_err("CREATE TABLE y WITH (connector = 'stdout', colour = 'red');\nINSERT INTO y SELECT did FROM posts;").await;
    assert!(m.contains("unknown option 'colour'"), "{m}");
}

#[tokio::test]
async fn syntax_errors_and_forbidden_statements() {
    let (m, l, _) = plan_err("INSERT INTO out SELEC did FROM posts;").await;
    assert!(m.contains("syntax error"), "{m}");
    assert_eq!(l, Some(1));
    let (m, _, _) = plan_err("DROP TABLE posts;").await;
    assert!(m.contains("not allowed in a pipeline"), "{m}");
    let (m, _, _) = plan_err("INSERT INTO nowhere SELECT did FROM posts;").await;
    assert!(m.contains("no such table"), "{m}");
    let (m, _, _) =
        plan_err("INSERT INTO out SELECT did FROM posts WHERE did IN (SELECT did FROM posts);")
            .await;
    assert!(m.contains("subqueries"), "{m}");
}

#[tokio::test]
async fn bad_source_options_are_named() {
    let reg = skystream_registry::registry();
    let e = skystream_sql::plan_script("CREATE TABLE p WITH (connector = 'replay', path = '/nonexistent/x.jsonl');\nSELECT did FROM p;", &reg)
        .await
        .err()
        .unwrap();
    assert!(e.message.contains("does not exist"), "{e}");
    let e = skystream_sql::plan_script(
        "CREATE TABLE p WITH (connector = 'synthetic', rate = 'fast');\nSELECT did FROM p;",
        &reg,
    )
    .await
    .err()
    .unwrap();
    assert!(e.message.contains("rate"), "{e}");
    let e = skystream_sql::plan_script(
        "CREATE TABLE p (nope TEXT) WITH (connector = 'synthetic');\nSELECT * FROM p;",
        &reg,
    )
    .await
    .err()
    .unwrap();
    assert!(e.message.contains("no column 'nope'"), "{e}");
}

/// Windowed results are joined window by window: the join must match their windows, and the
/// windows must slide alike (their ends coincide).
#[tokio::test]
async fn joins_of_windowed_results() {
    let views = "CREATE VIEW a AS SELECT did, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win FROM posts GROUP BY did, win;
CREATE VIEW b AS SELECT did, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '60' MINUTE) AS win FROM posts GROUP BY did, win;
CREATE VIEW c AS SELECT did, count(*) AS n, tumble(INTERVAL '2' MINUTE) AS win FROM posts GROUP BY did, win;
";
    let (m, l, c) = plan_err(&format!(
        "{views}INSERT INTO out SELECT a.did, a.n, b.n FROM a\nJOIN b ON a.did = b.did;"
    ))
    .await;
    assert!(m.contains("must match their windows"), "{m}");
    assert_eq!((l, c), (Some(5), Some(1)));
    let (m, _, _) = plan_err(&format!(
        "{views}INSERT INTO out SELECT a.did, a.n, c.n FROM a JOIN c ON a.did = c.did AND a.win['end'] = c.win['end'];"
    ))
    .await;
    assert!(m.contains("slide by the same interval"), "{m}");
    let (m, _, _) = plan_err(&format!(
        "{views}INSERT INTO out SELECT a.did FROM a JOIN posts p ON a.did = p.did;"
    ))
    .await;
    assert!(m.contains("JOIN of unbounded streams"), "{m}");
    let (m, _, _) = plan_err(&format!(
        "{views}INSERT INTO out SELECT did FROM a UNION ALL SELECT did FROM posts;"
    ))
    .await;
    assert!(m.contains("UNION of a stream and windowed results"), "{m}");
    // Matched on the window end, two windows that slide alike plan.
    let sql = format!(
        "{}{views}INSERT INTO out SELECT a.win['end'] AS window_end, a.did, a.n, b.n FROM a JOIN b ON a.did = b.did AND a.win['end'] = b.win['end'];",
        source()
    );
    let p = skystream_sql::plan_script(&sql, &skystream_registry::registry())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The two windows read one head (the rows below them are computed once) and one
    // operator's slices.
    assert!(
        p.explain.contains(
            "1: window aggregate hop(60s, 300s) + hop(60s, 3600s) over slices of 60s, of the rows of 0"
        ),
        "{}",
        p.explain
    );
    assert!(
        p.explain
            .contains("2: DataFusion plan, run per window end, over the 2 windows' rows"),
        "{}",
        p.explain
    );
}
