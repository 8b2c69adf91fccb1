//! The SQL endpoint (PostgreSQL wire protocol) as its clients use it: `psql`, and SQLAlchemy's
//! postgresql dialect with psycopg2 — what Superset runs — against a lake filled by a synthetic
//! run of the shipped `sql/keyword_counts.sql`, checked against the lake's own files.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use skystream_engine::objstore::StoreLocation;
use skystream_pgsql::{LiveTable, SqlConfig, SqlServer};
use skystream_tests::*;

const PASSWORD: &str = "pg-s3cret";

/// Runs the shipped keyword counts over `minutes` of synthetic posts into the lake at `dir`.
async fn fill_lake(dir: &Path, start: &str, minutes: u32) {
    let sql = std::fs::read_to_string(repo_root().join("sql/keyword_counts.sql")).unwrap();
    let params: BTreeMap<String, String> = [("lake".to_string(), dir.display().to_string())]
        .into_iter()
        .collect();
    let sql = skystream_sql::params::substitute(&sql, &params).unwrap();
    let duration = format!("{minutes}m");
    let posts = synthetic_posts(&[
        ("seed", "5"),
        ("rate", "10"),
        ("duration", duration.as_str()),
        ("start", start),
    ]);
    let reg = skystream_registry::registry();
    let opts = skystream_sql::PlanOptions {
        tables: [("posts".to_string(), posts)].into(),
        ..Default::default()
    };
    let planned = skystream_sql::plan_script_with(&sql, &reg, &opts)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    planned.pipeline.run().await.unwrap();
}

/// A live table with fixed rows.
struct Fixed(SchemaRef);

impl LiveTable for Fixed {
    fn schema(&self) -> SchemaRef {
        self.0.clone()
    }
    fn snapshot(&self) -> datafusion::error::Result<Vec<RecordBatch>> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["eclipse", "tsunami"])),
            Arc::new(Int64Array::from(vec![42, 7])),
        ];
        Ok(vec![RecordBatch::try_new(self.0.clone(), cols)?])
    }
}

async fn start(lake: &Path, timeout: Duration, memory: usize) -> SqlServer {
    let cfg = SqlConfig {
        lake: Some(StoreLocation::open(&lake.display().to_string(), &BTreeMap::new()).unwrap()),
        password: Some(PASSWORD.into()),
        query_timeout: timeout,
        memory_limit: memory,
        refresh: Duration::from_millis(300),
        ..Default::default()
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("term", DataType::Utf8, false),
        Field::new("score", DataType::Int64, false),
    ]));
    let live: Vec<(String, Arc<dyn LiveTable>)> = vec![("trends".into(), Arc::new(Fixed(schema)))];
    SqlServer::start("127.0.0.1:0".parse().unwrap(), cfg, live)
        .await
        .unwrap()
}

/// `psql` (Debian's client) running one command; `Err` holds its error output.
async fn psql(addr: SocketAddr, password: &str, sql: &str) -> Result<String, String> {
    let (addr, password, sql) = (addr, password.to_string(), sql.to_string());
    tokio::task::spawn_blocking(move || {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1"])
            .arg(format!(
                "host={} port={} user=skystream dbname=skystream connect_timeout=10",
                addr.ip(),
                addr.port()
            ))
            .args(["-c", &sql])
            .env("PGPASSWORD", password)
            .output()
            .expect("psql (Debian postgresql-client) must be installed");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    })
    .await
    .unwrap()
}

/// `keyword -> (rows, sum(count))` and the total, from the lake's files directly.
async fn lake_totals(dir: &Path) -> (BTreeMap<String, (u64, u64)>, u64, u64) {
    // window_start | window_end | lang | keyword | count | distinct_authors
    let rows = read_lake(&lake_url(&dir.join("keyword_counts")), None).await;
    let mut per = BTreeMap::new();
    let mut total = 0;
    for r in &rows {
        let f: Vec<&str> = r.split(" | ").collect();
        let n: u64 = f[4].parse().unwrap();
        let e = per.entry(f[3].to_string()).or_insert((0, 0));
        e.0 += 1;
        e.1 += n;
        total += n;
    }
    (per, rows.len() as u64, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reads_the_lake_and_live_tables_and_cannot_write() {
    let lake = std::env::temp_dir().join(skystream_tests::services::unique_topic("sql-lake"));
    fill_lake(&lake, "2026-07-04T12:00:00Z", 90).await;
    let server = start(&lake, Duration::from_secs(3), 64 << 20).await;
    let addr = server.addr;
    let (per, rows, total) = lake_totals(&lake).await;
    assert!(rows > 100, "{rows} rows in the lake");

    // Rows and sums match the files.
    let got = psql(
        addr,
        PASSWORD,
        "SELECT count(*), sum(count) FROM keyword_counts",
    )
    .await
    .unwrap();
    assert_eq!(got, format!("{rows}|{total}"));
    let mut top: Vec<(&String, &(u64, u64))> = per.iter().collect();
    top.sort_by(|a, b| b.1.1.cmp(&a.1.1).then(a.0.cmp(b.0)));
    let want: Vec<String> = top
        .iter()
        .take(5)
        .map(|(k, (_, n))| format!("{k}|{n}"))
        .collect();
    let got = psql(
        addr,
        PASSWORD,
        "SELECT keyword, sum(count) AS n FROM lake.keyword_counts GROUP BY keyword \
         ORDER BY n DESC, keyword LIMIT 5",
    )
    .await
    .unwrap();
    assert_eq!(got, want.join("\n"));
    // Hive partitions are columns; a time grain works.
    let got = psql(
        addr,
        PASSWORD,
        "SELECT dt, hour, count(*) FROM keyword_counts GROUP BY dt, hour ORDER BY dt, hour",
    )
    .await
    .unwrap();
    let hours: Vec<&str> = got.lines().collect();
    assert_eq!(hours.len(), 2, "{got}");
    assert!(hours[0].starts_with("2026-07-04|12|"), "{got}");
    let got = psql(
        addr,
        PASSWORD,
        "SELECT date_trunc('hour', window_end) AS t, sum(count) FROM keyword_counts \
         GROUP BY 1 ORDER BY 1",
    )
    .await
    .unwrap();
    let sums: u64 = got
        .lines()
        .map(|l| l.rsplit('|').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(sums, total, "{got}");

    // The live schema.
    let got = psql(
        addr,
        PASSWORD,
        "SELECT term, score FROM live.trends ORDER BY score DESC",
    )
    .await
    .unwrap();
    assert_eq!(got, "eclipse|42\ntsunami|7");
    // Catalog queries psql's \dt runs, and what a server reports about itself.
    let got = psql(addr, PASSWORD, "\\dt lake.*").await.unwrap();
    assert!(got.contains("keyword_counts"), "{got}");
    let got = psql(addr, PASSWORD, "SELECT version()").await.unwrap();
    assert!(got.starts_with("PostgreSQL 16.6 (skystream"), "{got}");
    let got = psql(addr, PASSWORD, "SHOW search_path").await;
    assert!(got.is_ok(), "{got:?}");

    // Writes and DDL are refused with SQLSTATE 25006, and nothing changes.
    for sql in [
        "INSERT INTO keyword_counts (keyword) VALUES ('x')",
        "DELETE FROM keyword_counts",
        "DROP TABLE keyword_counts",
        "CREATE TABLE t AS SELECT 1",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc/'",
        "COPY keyword_counts TO '/tmp/out.csv'",
        "SELECT 1 INTO t",
    ] {
        let e = psql(addr, PASSWORD, sql).await.unwrap_err();
        assert!(e.contains("read-only"), "{sql}: {e}");
    }
    let got = psql(addr, PASSWORD, "SELECT count(*) FROM keyword_counts")
        .await
        .unwrap();
    assert_eq!(got, rows.to_string());

    // A wrong password, or user, is refused.
    let e = psql(addr, "wrong", "SELECT 1").await.unwrap_err();
    assert!(
        e.to_lowercase().contains("password authentication failed"),
        "{e}"
    );

    // A statement past the timeout is cancelled (57014); one past the memory limit fails alone.
    let e = psql(
        addr,
        PASSWORD,
        "SELECT count(*) FROM generate_series(1, 100000000000)",
    )
    .await
    .unwrap_err();
    assert!(e.contains("statement timeout"), "{e}");
    let e = psql(
        addr,
        PASSWORD,
        "SELECT value, repeat('x', 100) FROM generate_series(1, 5000000) ORDER BY value DESC",
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("Resources exhausted") || e.contains("memory"),
        "{e}"
    );
    assert_eq!(psql(addr, PASSWORD, "SELECT 1").await.unwrap(), "1");

    // Files and datasets committed later show up.
    fill_lake(&lake, "2026-07-04T15:00:00Z", 10).await;
    let (_, rows2, total2) = lake_totals(&lake).await;
    assert!(rows2 > rows);
    let want = format!("{rows2}|{total2}");
    let mut got = String::new();
    for _ in 0..50 {
        got = psql(
            addr,
            PASSWORD,
            "SELECT count(*), sum(count) FROM keyword_counts",
        )
        .await
        .unwrap();
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(got, want);
    let copy = lake.join("keyword_counts_copy");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(lake.join("keyword_counts")).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("dt=") {
            let dst = copy.join(p.file_name().unwrap());
            Command::new("cp")
                .arg("-r")
                .arg(&p)
                .arg(&dst)
                .status()
                .unwrap();
        }
    }
    let got = psql(addr, PASSWORD, "SELECT count(*) FROM keyword_counts_copy")
        .await
        .unwrap();
    assert_eq!(got, rows2.to_string());

    server.stop().await;
    let _ = std::fs::remove_dir_all(&lake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy_reflects_and_queries_like_superset() {
    let python = std::env::var("SKYSTREAM_PYTHON").unwrap_or_else(|_| "python3".into());
    let lake = std::env::temp_dir().join(skystream_tests::services::unique_topic("sql-lake-sa"));
    fill_lake(&lake, "2026-07-04T12:00:00Z", 90).await;
    let server = start(&lake, Duration::from_secs(30), 256 << 20).await;
    let (per, _, total) = lake_totals(&lake).await;
    let (kw, (_, kw_total)) = per.iter().max_by_key(|(_, (_, n))| *n).unwrap();
    let url = format!(
        "postgresql://skystream:{PASSWORD}@127.0.0.1:{}/skystream",
        server.addr.port()
    );
    let script = repo_root().join("tests/python/sqlalchemy_reflect.py");
    let (kw2, python2) = (kw.clone(), python.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python2)
            .arg(script)
            .arg(url)
            .arg(kw2)
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SQLAlchemy + psycopg2 failed (scripts/services.sh installs them):\n{stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["server_version"], serde_json::json!([16, 6]));
    let schemas: Vec<&str> = v["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(
        schemas.contains(&"lake") && schemas.contains(&"live"),
        "{v}"
    );
    assert_eq!(v["tables"], serde_json::json!(["keyword_counts"]), "{v}");
    assert_eq!(v["live_tables"], serde_json::json!(["trends"]), "{v}");
    let columns: Vec<&str> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "window_start",
            "window_end",
            "lang",
            "keyword",
            "count",
            "distinct_authors",
            "dt",
            "hour"
        ],
        "{v}"
    );
    assert!(
        v["columns"][1][1]
            .as_str()
            .unwrap()
            .starts_with("TIMESTAMP"),
        "{v}"
    );
    assert_eq!(v["columns"][4][1], "BIGINT", "{v}");
    assert_eq!(v["pk"]["constrained_columns"], serde_json::json!([]), "{v}");
    assert_eq!(v["indexes"], serde_json::json!([]), "{v}");
    assert!(
        v["version"]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL 16.6")
    );
    assert!(
        v["databases"]
            .as_array()
            .unwrap()
            .contains(&"skystream".into()),
        "{v}"
    );
    let hourly: u64 = v["hourly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[1].as_u64().unwrap())
        .sum();
    assert_eq!(hourly, total, "{v}");
    assert_eq!(v["hourly"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["param_query"], serde_json::json!([[kw, kw_total]]), "{v}");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&lake);
}
