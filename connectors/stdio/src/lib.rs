//! Sinks for people and files: `connector = 'stdout'` (a table per emitted batch, or JSON
//! lines) and `connector = 'file'` (JSON lines appended to a file).
//!
//! ```sql
//! CREATE TABLE trends WITH (connector = 'stdout', format = 'table');
//! CREATE TABLE counts WITH (connector = 'file', path = 'out/counts.jsonl');
//! ```

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::LineDelimitedWriter;
use arrow::util::pretty::pretty_format_batches;
use futures::FutureExt;
use futures::future::BoxFuture;
use skystream_engine::connector::{Connector, Resource, TableDef};
use skystream_engine::sink::Sink;
use skystream_engine::{Error, Result};

/// Encodes batches as JSON lines (timestamps as RFC 3339 strings, lists as arrays, the window as
/// an object with `start` and `end`).
pub fn json_lines(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut w = LineDelimitedWriter::new(Vec::new());
    w.write(batch)?;
    w.finish()?;
    Ok(w.into_inner())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StdoutFormat {
    Table,
    Json,
}

/// `connector = 'stdout'`; option `format` = `table` (default) or `json`; `title` is printed
/// above each table.
pub struct StdoutConnector;

fn stdout_config(table: &TableDef) -> Result<(StdoutFormat, Option<String>)> {
    let mut o = table.options();
    let f = match o.take_choice("format", &["table", "json"])?.as_deref() {
        Some("json") => StdoutFormat::Json,
        _ => StdoutFormat::Table,
    };
    let title = o.take("title");
    o.finish()?;
    Ok((f, title))
}

impl Connector for StdoutConnector {
    fn name(&self) -> &str {
        "stdout"
    }

    fn description(&self) -> &str {
        "sink: prints rows to standard output, as a table per window or as JSON lines"
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn validate_sink(&self, table: &TableDef, _schema: &SchemaRef) -> Result<()> {
        stdout_config(table).map(|_| ())
    }

    fn create_sink(&self, table: &TableDef, _schema: SchemaRef) -> Result<Box<dyn Sink>> {
        let (format, title) = stdout_config(table)?;
        Ok(Box::new(StdoutSink { format, title }))
    }
}

struct StdoutSink {
    format: StdoutFormat,
    title: Option<String>,
}

impl Sink for StdoutSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        let out = match self.format {
            StdoutFormat::Json => json_lines(&batch),
            StdoutFormat::Table => pretty_format_batches(&[batch])
                .map_err(Error::from)
                .map(|t| {
                    let mut s = String::new();
                    if let Some(title) = &self.title {
                        s.push_str(title);
                        s.push('\n');
                    }
                    s.push_str(&t.to_string());
                    s.push('\n');
                    s.into_bytes()
                }),
        };
        async move {
            let out = out?;
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) ends output quietly.
            match stdout.write_all(&out).and_then(|_| stdout.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.map_err(Error::from),
            }
        }
        .boxed()
    }
}

/// `connector = 'file'`: JSON lines appended to `path` (created with its directories);
/// `truncate = 'true'` starts the file empty.
pub struct FileConnector;

fn file_config(table: &TableDef) -> Result<(String, bool)> {
    let mut o = table.options();
    let path = o.take_required("path")?;
    o.take_choice("format", &["jsonl", "json"])?;
    let truncate = o.take_bool("truncate")?.unwrap_or(false);
    o.finish()?;
    Ok((path, truncate))
}

impl Connector for FileConnector {
    fn name(&self) -> &str {
        "file"
    }

    fn resources(&self, table: &TableDef) -> Vec<Resource> {
        vec![Resource::LocalPath(
            table.options.get("path").unwrap_or_default().to_string(),
        )]
    }

    fn description(&self) -> &str {
        "sink: appends rows to a JSON-lines file"
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn validate_sink(&self, table: &TableDef, _schema: &SchemaRef) -> Result<()> {
        file_config(table).map(|_| ())
    }

    fn create_sink(&self, table: &TableDef, _schema: SchemaRef) -> Result<Box<dyn Sink>> {
        let (path, truncate) = file_config(table)?;
        if let Some(dir) = std::path::Path::new(&path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::connector("file", format!("cannot create '{}': {e}", dir.display()))
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(&path)
            .map_err(|e| Error::connector("file", format!("cannot open '{path}': {e}")))?;
        Ok(Box::new(FileSink {
            out: std::io::BufWriter::new(file),
        }))
    }
}

struct FileSink {
    out: std::io::BufWriter<std::fs::File>,
}

impl Sink for FileSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        let r = json_lines(&batch).and_then(|b| self.out.write_all(&b).map_err(Error::from));
        async move { r }.boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        let r = self.out.flush().map_err(Error::from);
        async move { r }.boxed()
    }
}
