//! Record decoders: bytes of one input record (a JSONL line, a Kafka message) to Arrow rows.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::reader::{Decoder, ReaderBuilder};

use crate::Result;

/// What became of one input record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// It became a row.
    Row,
    /// It is valid but not a row of this table (another collection, a delete, ...).
    Filtered,
}

/// Decodes records into batches of a fixed schema.
pub trait RecordDecoder: Send {
    fn schema(&self) -> SchemaRef;
    /// Decodes one record. `Err(reason)` means the record is malformed: the caller counts and
    /// logs it and goes on.
    fn push(&mut self, record: &[u8]) -> Result<Decoded, String>;
    /// Rows buffered.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The rows buffered so far, as a batch (`None` when there are none).
    fn flush(&mut self) -> Result<Option<RecordBatch>>;
}

/// The largest input record (a JSONL line, a Kafka message, a Jetstream event) decoded; larger
/// ones are skipped as malformed. Real Jetstream events are a few KiB.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Decodes one input record into `decoder`, counting it, and counting and logging (the first
/// 20 of) the malformed ones.
pub fn push_record(
    decoder: &mut dyn RecordDecoder,
    ctx: &crate::source::SourceContext,
    name: &str,
    record_no: u64,
    record: &[u8],
    logged: &mut u32,
) {
    let trimmed = record.trim_ascii();
    if trimmed.is_empty() {
        return;
    }
    ctx.counters.add_records(1);
    let decoded = if trimmed.len() > MAX_RECORD_BYTES {
        Err(format!(
            "{} bytes, over the limit of {MAX_RECORD_BYTES} bytes a record may have",
            trimmed.len()
        ))
    } else {
        decoder.push(trimmed)
    };
    match decoded {
        Ok(Decoded::Row) => {}
        Ok(Decoded::Filtered) => ctx.counters.add_filtered(1),
        Err(reason) => {
            ctx.counters.add_malformed(1);
            if *logged < 20 {
                *logged += 1;
                tracing::warn!(source = %name, record = record_no, "skipping malformed record: {reason}");
            }
        }
    }
}

/// `format = 'json'`: one JSON object per record, fields matched to the table's columns by name
/// (arrow-json), unknown fields ignored.
pub struct JsonDecoder {
    schema: SchemaRef,
    decoder: Decoder,
    rows: usize,
    /// Rows the arrow-json decoder holds (it takes at most [`JSON_CHUNK`] before a flush).
    in_decoder: usize,
    /// Chunks flushed out of the decoder, awaiting [`RecordDecoder::flush`].
    chunks: Vec<RecordBatch>,
}

/// Rows arrow-json decodes before its buffer is moved into a chunk.
const JSON_CHUNK: usize = 8192;

impl JsonDecoder {
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(JSON_CHUNK)
            .build_decoder()?;
        Ok(Self {
            schema,
            decoder,
            rows: 0,
            in_decoder: 0,
            chunks: Vec::new(),
        })
    }
}

impl RecordDecoder for JsonDecoder {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn push(&mut self, record: &[u8]) -> Result<Decoded, String> {
        // Validate alone first: a bad record must not poison the rows buffered with it.
        let value: serde_json::Value =
            serde_json::from_slice(record).map_err(|e| format!("invalid JSON: {e}"))?;
        if !value.is_object() {
            return Err("a record must be a JSON object".into());
        }
        // Type mismatches are found by a one-row decode of the record.
        let mut probe = ReaderBuilder::new(self.schema.clone())
            .build_decoder()
            .map_err(|e| e.to_string())?;
        probe.decode(record).map_err(|e| e.to_string())?;
        probe
            .flush()
            .map_err(|e| format!("does not fit the table's columns: {e}"))?;
        if self.in_decoder == JSON_CHUNK {
            if let Some(b) = self.decoder.flush().map_err(|e| e.to_string())? {
                self.chunks.push(b);
            }
            self.in_decoder = 0;
        }
        self.decoder.decode(record).map_err(|e| e.to_string())?;
        self.decoder.decode(b"\n").map_err(|e| e.to_string())?;
        self.rows += 1;
        self.in_decoder += 1;
        Ok(Decoded::Row)
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>> {
        self.rows = 0;
        self.in_decoder = 0;
        if let Some(b) = self.decoder.flush()? {
            self.chunks.push(b);
        }
        match self.chunks.len() {
            0 => Ok(None),
            1 => Ok(self.chunks.pop()),
            _ => {
                let b = arrow::compute::concat_batches(&self.schema, &self.chunks)?;
                self.chunks.clear();
                Ok(Some(b))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;

    #[test]
    fn json_batches_larger_than_a_chunk() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let mut d = JsonDecoder::new(schema).unwrap();
        let n = JSON_CHUNK * 2 + 17;
        for i in 0..n {
            assert_eq!(
                d.push(format!(r#"{{"v":{i}}}"#).as_bytes()),
                Ok(Decoded::Row)
            );
        }
        assert!(d.push(b"{\"v\":\"x\"}").is_err());
        assert!(d.push(b"[1]").is_err());
        assert_eq!(d.len(), n);
        let b = d.flush().unwrap().unwrap();
        let v = b.column(0).as_primitive::<Int64Type>();
        assert_eq!(v.len(), n);
        assert!(v.values().iter().enumerate().all(|(i, &x)| x == i as i64));
        assert!(d.flush().unwrap().is_none());
    }
}
