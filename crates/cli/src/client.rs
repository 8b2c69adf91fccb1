//! The HTTP API from the command line: `skystream submit | pipelines | tail | stop | start |
//! delete`. Scripts are read from files (or shipped names) and sent as JSON, so nobody quotes SQL
//! inside JSON by hand; a query error is shown under the offending text.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;

/// Where the server is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// The server's base address.
    #[arg(
        long,
        env = "SKYSTREAM_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// The server's bearer token (`skystream serve --token`).
    #[arg(long, env = "SKYSTREAM_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The script: a file, or the name of a shipped one (trends, top_counts, ...).
    file: PathBuf,
    /// The pipeline's name (default: the script's file name).
    #[arg(long)]
    name: Option<String>,
    /// Fill a ${name} placeholder of the script: --set rate=100 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Seconds between checkpoints (the server's default: 10).
    #[arg(long)]
    checkpoint_interval: Option<f64>,
    /// Only check the script on the server and print its plan; submit nothing.
    #[arg(long)]
    validate: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// One JSON document (the API's answer) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// The pipeline: its id or its name.
    pipeline: String,
    /// One JSON object per row, `{"table": ..., "row": {...}}`, instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// The pipeline: its id or its name.
    pipeline: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Clone, Copy, Debug)]
pub enum Action {
    Stop,
    Start,
    Delete,
}

/// The error body every endpoint returns.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    line: Option<u64>,
    column: Option<u64>,
}

/// The parts of a pipeline the CLI shows.
#[derive(Deserialize)]
struct PipelineView {
    id: String,
    name: String,
    state: String,
    error: Option<String>,
    #[serde(default)]
    outputs: Vec<String>,
    metrics: Option<Metrics>,
}

#[derive(Deserialize, Default)]
struct Metrics {
    #[serde(default)]
    rows_in: u64,
    #[serde(default)]
    rows_out: u64,
    #[serde(default)]
    late_rows: u64,
    watermark: Option<String>,
}

struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    fn new(api: &ApiArgs) -> Result<Self> {
        let base = api.server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server {base}: an http:// or https:// address");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("HTTP client")?;
        Ok(Self {
            base,
            http,
            token: api.token.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `req` (answers within a minute) and returns the body of a 2xx answer; a refusal
    /// about a query points into `script` (its label and text).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        script: Option<(&str, &str)>,
    ) -> Result<Vec<u8>> {
        let resp = req
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = resp.status();
        let body = read_capped(resp).await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(refusal(status, &body, script))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let body = self
            .send(self.request(reqwest::Method::GET, path), None)
            .await?;
        parse_answer(&body)
    }

    /// POSTs `body` as JSON; a refusal points into `script`.
    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        script: Option<(&str, &str)>,
    ) -> Result<T> {
        let req = self.request(reqwest::Method::POST, path).json(body);
        parse_answer(&self.send(req, script).await?)
    }

    /// The id of the pipeline named or identified by `which`.
    async fn resolve(&self, which: &str) -> Result<String> {
        let list: Vec<PipelineView> = self.get_json("/api/v1/pipelines").await?;
        if let Some(p) = list.iter().find(|p| p.id == which) {
            return Ok(p.id.clone());
        }
        match list.iter().find(|p| p.name == which) {
            Some(p) => Ok(p.id.clone()),
            None => {
                bail!("no pipeline with the id or name '{which}' (skystream pipelines lists them)")
            }
        }
    }
}

fn parse_answer<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).context("the server's answer is not what was expected")
}

/// A body of at most [`MAX_EVENT_BYTES`]: a misbehaving server must not grow the client.
async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("reading the server's answer")? {
        if body.len() + chunk.len() > MAX_EVENT_BYTES {
            bail!("the server's answer is over {} MiB", MAX_EVENT_BYTES >> 20);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error of a refused request: the server's message, under it the SQL line with a caret
/// when the error has a position in `script` (its label and text).
fn refusal(
    status: reqwest::StatusCode,
    body: &[u8],
    script: Option<(&str, &str)>,
) -> anyhow::Error {
    let Ok(e) = serde_json::from_slice::<ErrorBody>(body) else {
        let text = String::from_utf8_lossy(body);
        return anyhow::anyhow!("the server answered {status}: {}", text.trim());
    };
    let mut msg = format!("{} ({status})", e.error);
    if let (Some((label, sql)), Some(line), Some(col)) = (script, e.line, e.column)
        && let Some(snippet) = with_caret(sql, line, col)
    {
        msg = format!("{msg}\n  --> {label}:{line}:{col}\n{snippet}");
    }
    anyhow::anyhow!(msg)
}

/// The 1-based `line` of `sql` with a caret line under the word starting at 1-based character
/// `column`, numbered like a compiler's: `  3 | text` / `    |   ^^^`.
pub fn with_caret(sql: &str, line: u64, column: u64) -> Option<String> {
    let text = sql.lines().nth(line.checked_sub(1)? as usize)?;
    let chars: Vec<char> = text.chars().collect();
    let start = (column.checked_sub(1)? as usize).min(chars.len());
    let word = chars[start..]
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '_')
        .count()
        .max(1);
    // Tabs kept as tabs so the caret lines up under them.
    let pad: String = chars[..start]
        .iter()
        .map(|c| if *c == '\t' { '\t' } else { ' ' })
        .collect();
    let num = line.to_string();
    let gutter = " ".repeat(num.len());
    Some(format!(
        " {gutter} |\n {num} | {text}\n {gutter} | {pad}{}",
        "^".repeat(word)
    ))
}

pub fn submit(args: SubmitArgs) -> Result<()> {
    let client = Client::new(&args.api)?;
    let raw = crate::script_text(&args.file)?;
    let params = skystream_sql::params::parse_sets(&args.sets).map_err(anyhow::Error::msg)?;
    // The server reports positions in the script with its placeholders filled.
    let shown = skystream_sql::params::substitute(&raw, &params).unwrap_or_else(|_| raw.clone());
    let label = args.file.display().to_string();
    let script = Some((label.as_str(), shown.as_str()));
    let rt = crate::runtime()?;
    if args.validate {
        #[derive(Deserialize)]
        struct Plan {
            outputs: Vec<String>,
            plan: String,
        }
        let body = serde_json::json!({ "query": raw, "params": params });
        let p: Plan = rt.block_on(client.post_json("/api/v1/validate", &body, script))?;
        println!("ok: writes {}\n{}", p.outputs.join(", "), p.plan);
        return Ok(());
    }
    let name = crate::pipeline_name(args.name, &args.file);
    let mut body = serde_json::json!({ "name": name, "query": raw, "params": params });
    if let Some(i) = args.checkpoint_interval {
        body["checkpoint_interval"] = i.into();
    }
    let p: PipelineView = rt.block_on(client.post_json("/api/v1/pipelines", &body, script))?;
    println!(
        "{} (id {}): {}, writes {}",
        p.name,
        p.id,
        p.state,
        p.outputs.join(", ")
    );
    if let Some(e) = p.error {
        bail!("{} failed: {e}", p.name);
    }
    Ok(())
}

pub fn pipelines(args: ListArgs) -> Result<()> {
    let client = Client::new(&args.api)?;
    let rt = crate::runtime()?;
    if args.json {
        let v: Value = rt.block_on(client.get_json("/api/v1/pipelines"))?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let list: Vec<PipelineView> = rt.block_on(client.get_json("/api/v1/pipelines"))?;
    if list.is_empty() {
        println!("no pipelines (skystream submit FILE.sql adds one)");
        return Ok(());
    }
    let header = [
        "ID",
        "NAME",
        "STATE",
        "ROWS IN",
        "ROWS OUT",
        "LATE",
        "WATERMARK",
        "OUTPUTS",
    ];
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|p| {
            let m = p.metrics.unwrap_or_default();
            let state = match &p.error {
                Some(e) => format!("{}: {}", p.state, first_line(e)),
                None => p.state,
            };
            vec![
                p.id,
                p.name,
                state,
                m.rows_in.to_string(),
                m.rows_out.to_string(),
                m.late_rows.to_string(),
                m.watermark.unwrap_or_else(|| "-".into()),
                p.outputs.join(","),
            ]
        })
        .collect();
    let mut out = std::io::stdout().lock();
    write_table(
        &mut out,
        &header.map(String::from),
        &rows,
        &column_widths(&header.map(String::from), &rows),
    )?;
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

pub fn action(what: Action, args: TargetArgs) -> Result<()> {
    let client = Client::new(&args.api)?;
    let rt = crate::runtime()?;
    rt.block_on(async {
        let id = client.resolve(&args.pipeline).await?;
        let path = format!("/api/v1/pipelines/{id}");
        let req = match what {
            Action::Stop => client.request(reqwest::Method::POST, &format!("{path}/stop")),
            Action::Start => client.request(reqwest::Method::POST, &format!("{path}/start")),
            Action::Delete => client.request(reqwest::Method::DELETE, &path),
        };
        let answer = client.send(req, None).await?;
        if let Action::Delete = what {
            println!("{id}: deleted");
            return Ok(());
        }
        let p: PipelineView = parse_answer(&answer)?;
        println!("{} (id {}): {}", p.name, p.id, p.state);
        match p.error {
            Some(e) => bail!("{} failed: {e}", p.name),
            None => Ok(()),
        }
    })
}

/// A result row with its columns in the order the server wrote them.
#[derive(Debug, PartialEq)]
struct Row(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Row {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Row;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a row object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Row, A::Error> {
                let mut cols = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, Value>()? {
                    cols.push((k, v));
                }
                Ok(Row(cols))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct RowsEvent {
    table: String,
    rows: Vec<Row>,
}

/// One Server-Sent Event.
#[derive(Debug, PartialEq)]
struct SseEvent {
    event: String,
    data: String,
}

/// Splits a byte stream into Server-Sent Events (event and data fields; comments, ids and
/// retry fields ignored). Input may arrive cut anywhere.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
}

/// An answer or an event's data beyond this is refused: a misbehaving server must not grow the
/// client.
const MAX_EVENT_BYTES: usize = 64 << 20;

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(SseEvent {
                        event: std::mem::take(&mut self.event),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => self.event = value.to_string(),
                "data" => self.data.push(value.to_string()),
                _ => {}
            }
        }
        let held = self.buf.len() + self.data.iter().map(String::len).sum::<usize>();
        if held > MAX_EVENT_BYTES {
            bail!(
                "the server sent an event of over {} MiB",
                MAX_EVENT_BYTES >> 20
            );
        }
        Ok(out)
    }
}

pub fn tail(args: TailArgs) -> Result<()> {
    let client = Client::new(&args.api)?;
    let rt = crate::runtime()?;
    rt.block_on(async {
        let id = client.resolve(&args.pipeline).await?;
        let resp = client
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/pipelines/{id}/output"),
            )
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", client.base))?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_capped(resp).await?;
            return Err(refusal(status, &body, None));
        }
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        let mut printer = RowPrinter::new(args.json);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("the event stream broke off")?;
            for ev in parser.push(&chunk)? {
                match ev.event.as_str() {
                    "rows" => {
                        let rows: RowsEvent = serde_json::from_str(&ev.data)
                            .context("a rows event the client cannot read")?;
                        let mut out = std::io::stdout().lock();
                        match printer.print(&mut out, &rows) {
                            Ok(()) => {}
                            // `skystream tail ID | head`: the reader left; so do we.
                            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                            Err(e) => return Err(e.into()),
                        }
                    }
                    "lagged" => eprintln!("(the client fell behind; rows skipped: {})", ev.data),
                    "end" => {
                        #[derive(Deserialize)]
                        struct End {
                            state: String,
                        }
                        let state = serde_json::from_str::<End>(&ev.data)
                            .map(|e| e.state)
                            .unwrap_or(ev.data);
                        eprintln!("{}: {state}", args.pipeline);
                        if state == "failed" {
                            let p: PipelineView =
                                client.get_json(&format!("/api/v1/pipelines/{id}")).await?;
                            bail!("{} failed: {}", p.name, p.error.unwrap_or_default());
                        }
                        return Ok(());
                    }
                    _ => {}
                }
            }
        }
        bail!("the server closed the event stream before its end event")
    })
}

/// Prints rows events: as aligned tables (a header whenever the table or its columns change)
/// or as JSON lines.
struct RowPrinter {
    json: bool,
    last_header: Option<(String, Vec<String>)>,
}

impl RowPrinter {
    fn new(json: bool) -> Self {
        Self {
            json,
            last_header: None,
        }
    }

    fn print(&mut self, out: &mut impl Write, ev: &RowsEvent) -> std::io::Result<()> {
        if self.json {
            for row in &ev.rows {
                // serde_json's map sorts keys; write the columns in their own order.
                let cols: Vec<String> = row
                    .0
                    .iter()
                    .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), v))
                    .collect();
                writeln!(
                    out,
                    "{{\"table\":{},\"row\":{{{}}}}}",
                    Value::from(ev.table.as_str()),
                    cols.join(",")
                )?;
            }
            return out.flush();
        }
        let Some(first) = ev.rows.first() else {
            return Ok(());
        };
        let header: Vec<String> = first.0.iter().map(|(k, _)| k.clone()).collect();
        let rows: Vec<Vec<String>> = ev
            .rows
            .iter()
            .map(|r| {
                header
                    .iter()
                    .map(|h| {
                        r.0.iter()
                            .find(|(k, _)| k == h)
                            .map(|(_, v)| cell(v))
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .collect();
        let widths = column_widths(&header, &rows);
        let key = (ev.table.clone(), header.clone());
        if self.last_header.as_ref() != Some(&key) {
            writeln!(out, "-- {}", ev.table)?;
            write_table(out, &header, &rows, &widths)?;
            self.last_header = Some(key);
        } else {
            write_table(out, &[], &rows, &widths)?;
        }
        out.flush()
    }
}

/// A value as a table cell: strings bare, null empty.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn column_widths(header: &[String], rows: &[Vec<String>]) -> Vec<usize> {
    header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([h.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// Aligned columns, two spaces apart; an empty `header` prints rows only.
fn write_table(
    out: &mut impl Write,
    header: &[String],
    rows: &[Vec<String>],
    widths: &[usize],
) -> std::io::Result<()> {
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}"));
            }
        }
        s
    };
    if !header.is_empty() {
        writeln!(out, "{}", line(header))?;
    }
    for r in rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_under_the_word() {
        let sql = "SELECT a\nFROM posts\nWHERE lang = nope";
        let s = with_caret(sql, 3, 14).unwrap();
        assert_eq!(s, "   |\n 3 | WHERE lang = nope\n   |              ^^^^");
        assert!(with_caret(sql, 9, 1).is_none());
        assert!(with_caret(sql, 0, 1).is_none());
        // A column past the end still points somewhere, with one caret.
        assert!(with_caret(sql, 1, 99).unwrap().ends_with("        ^"));
    }

    #[test]
    fn refusal_shows_the_position() {
        let body = br#"{"error":"no column 'x'","line":2,"column":7}"#;
        let e = refusal(
            reqwest::StatusCode::BAD_REQUEST,
            body,
            Some(("q.sql", "SELECT 1\nWHERE x > 1")),
        );
        let s = e.to_string();
        assert!(s.starts_with("no column 'x' (400 Bad Request)"), "{s}");
        assert!(s.contains("--> q.sql:2:7"), "{s}");
        assert!(s.ends_with("|       ^"), "{s}");
        // Not JSON: the status and the text.
        let e = refusal(reqwest::StatusCode::BAD_GATEWAY, b"upstream down", None);
        assert_eq!(
            e.to_string(),
            "the server answered 502 Bad Gateway: upstream down"
        );
    }

    #[test]
    fn sse_events_split_anywhere() {
        let stream =
            b": keep-alive\n\nevent: rows\ndata: {\"a\":1}\r\n\nevent: end\ndata: x\ndata: y\n\n";
        for cut in 0..stream.len() {
            let mut p = SseParser::default();
            let mut evs = p.push(&stream[..cut]).unwrap();
            evs.extend(p.push(&stream[cut..]).unwrap());
            assert_eq!(
                evs,
                vec![
                    SseEvent {
                        event: "rows".into(),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        event: "end".into(),
                        data: "x\ny".into()
                    }
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn rows_keep_their_column_order() {
        let ev: RowsEvent = serde_json::from_str(
            r#"{"table":"trending","rows":[{"window_end":"10:00","term":"eclipse","score":9.5},{"window_end":"10:00","term":"地震","score":null}]}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        let mut p = RowPrinter::new(false);
        p.print(&mut out, &ev).unwrap();
        p.print(&mut out, &ev).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "-- trending\nwindow_end  term     score\n10:00       eclipse  9.5\n10:00       地震       \n\
             10:00       eclipse  9.5\n10:00       地震       \n"
        );
        let mut out = Vec::new();
        RowPrinter::new(true).print(&mut out, &ev).unwrap();
        let first = String::from_utf8(out)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string();
        assert_eq!(
            first,
            r#"{"table":"trending","row":{"window_end":"10:00","term":"eclipse","score":9.5}}"#
        );
    }

    #[test]
    fn an_oversized_event_is_refused() {
        let mut p = SseParser::default();
        let chunk = vec![b'a'; 1 << 20];
        let mut failed = false;
        for _ in 0..80 {
            if p.push(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}
