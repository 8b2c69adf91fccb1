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

/// `format = 'json'`: one JSON object per record, fields matched to the table's columns by name
/// (arrow-json), unknown fields ignored.
pub struct JsonDecoder {
    schema: SchemaRef,
    decoder: Decoder,
    rows: usize,
}

impl JsonDecoder {
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let decoder = ReaderBuilder::new(schema.clone())
            .with_batch_size(usize::MAX >> 1)
            .build_decoder()?;
        Ok(Self {
            schema,
            decoder,
            rows: 0,
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
        self.decoder.decode(record).map_err(|e| e.to_string())?;
        self.decoder.decode(b"\n").map_err(|e| e.to_string())?;
        self.rows += 1;
        Ok(Decoded::Row)
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn flush(&mut self) -> Result<Option<RecordBatch>> {
        self.rows = 0;
        Ok(self.decoder.flush()?)
    }
}
