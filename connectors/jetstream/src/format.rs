//! Choosing a record decoder from a table's `format` option and declared columns.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use skystream_engine::format::{JsonDecoder, RecordDecoder};
use skystream_engine::{Error, Result};
use skystream_model::post_schema;

use crate::JetstreamDecoder;

/// Formats a JSON-carrying connector accepts.
pub const FORMATS: &[&str] = &["jetstream", "json"];

/// The table schema for `format` given the declared columns. `jetstream` produces post rows:
/// declared columns must be post columns (any subset, any order); none declared means all.
/// `json` requires declared columns.
pub fn resolve_schema(
    table: &str,
    format: &str,
    declared: Option<&SchemaRef>,
) -> Result<SchemaRef> {
    match format {
        "jetstream" => {
            let full = post_schema();
            let Some(decl) = declared else {
                return Ok(full);
            };
            let mut fields = Vec::new();
            for f in decl.fields() {
                let Ok(p) = full.field_with_name(f.name()) else {
                    return Err(Error::plan(format!(
                        "table '{table}': format 'jetstream' has no column '{}' (columns: {})",
                        f.name(),
                        full.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                    )));
                };
                if p.data_type() != f.data_type() {
                    return Err(Error::plan(format!(
                        "table '{table}': column '{}' is {} in format 'jetstream', declared {}",
                        f.name(),
                        p.data_type(),
                        f.data_type()
                    )));
                }
                fields.push(p.clone());
            }
            Ok(Arc::new(Schema::new(fields)))
        }
        "json" => declared.cloned().ok_or_else(|| {
            Error::plan(format!("table '{table}': format 'json' needs declared columns: CREATE TABLE {table} (col TYPE, ...)"))
        }),
        other => Err(Error::plan(format!("table '{table}': unknown format '{other}' (known: jetstream, json)"))),
    }
}

/// The decoder of a source table whose records are Jetstream events (`format = 'jetstream'`),
/// producing columns `projection` of its schema.
pub fn jetstream_decoder(
    table: &skystream_engine::connector::TableDef,
    projection: &[usize],
) -> Result<Box<dyn RecordDecoder>> {
    let schema = resolve_schema(&table.name, "jetstream", table.declared_schema.as_ref())?;
    decoder_for("jetstream", &schema, projection)
}

/// A decoder producing columns `projection` of `table_schema` (from [`resolve_schema`]).
pub fn decoder_for(
    format: &str,
    table_schema: &SchemaRef,
    projection: &[usize],
) -> Result<Box<dyn RecordDecoder>> {
    let projected = Arc::new(table_schema.project(projection)?);
    match format {
        "jetstream" => {
            let full = post_schema();
            let cols: Vec<usize> = projected
                .fields()
                .iter()
                .map(|f| full.index_of(f.name()))
                .collect::<Result<_, _>>()?;
            // The builder emits columns in post-schema order; keep the table's order.
            let mut sorted = cols.clone();
            sorted.sort_unstable();
            if sorted != cols {
                return Ok(Box::new(Reordered {
                    inner: JetstreamDecoder::new(Some(&sorted)),
                    order: cols
                        .iter()
                        .map(|c| sorted.iter().position(|s| s == c).unwrap_or(0))
                        .collect(),
                    schema: projected,
                }));
            }
            Ok(Box::new(JetstreamDecoder::new(Some(&cols))))
        }
        "json" => Ok(Box::new(JsonDecoder::new(projected)?)),
        other => Err(Error::plan(format!("unknown format '{other}'"))),
    }
}

/// A Jetstream decoder whose columns are reordered to the table's declared order.
struct Reordered {
    inner: JetstreamDecoder,
    order: Vec<usize>,
    schema: SchemaRef,
}

impl RecordDecoder for Reordered {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn push(&mut self, record: &[u8]) -> Result<skystream_engine::format::Decoded, String> {
        self.inner.push(record)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn flush(&mut self) -> Result<Option<arrow::array::RecordBatch>> {
        let Some(b) = self.inner.flush()? else {
            return Ok(None);
        };
        let cols = self.order.iter().map(|&i| b.column(i).clone()).collect();
        Ok(Some(arrow::array::RecordBatch::try_new(
            self.schema.clone(),
            cols,
        )?))
    }
}
