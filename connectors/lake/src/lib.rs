//! `connector = 'lake'`: a sink writing rows as Parquet files into a data lake — a local
//! directory or an S3-compatible bucket (MinIO) — Hive-partitioned by time.
//!
//! ```sql
//! CREATE TABLE lake_counts WITH (connector = 'lake', path = 's3://lake/keyword_counts',
//!     s3_endpoint = 'http://127.0.0.1:9000', time_column = 'window_end');
//! ```
//!
//! Files land under `{path}/dt=YYYY-MM-DD/hour=HH/` (UTC, from `time_column`; `partition_by =
//! 'day'` drops the hour level, `'none'` both) and are named
//! `part-{pipeline}-{table}-{epoch:08}-{seq:05}.parquet`: the checkpoint epoch they belong to
//! and their order in it. A file rolls when it reaches `rollover_rows`, `rollover_bytes` or
//! `rollover_interval`; it is zstd-compressed with row groups of `row_group_rows`.
//!
//! With checkpoints (exactly-once), a file is written to `{path}/_staging/` first and moved to
//! its partition only when the checkpoint that covers its rows is stored; the checkpoint lists
//! the staged files, so a restore finishes a move a crash interrupted, and deletes staged files
//! of checkpoints that never completed (their rows are replayed). Readers (DataFusion
//! `ListingTable`, pyarrow, DuckDB) skip `_staging` and see only committed files. Without
//! checkpoints a file is visible as soon as it is closed, and a re-run of the same finite
//! input writes the same file names again (it overwrites instead of duplicating).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use skystream_engine::connector::{Connector, Resource, TableDef};
use skystream_engine::objstore::StoreLocation;
use skystream_engine::sink::{Sink, SinkStart, SinkStatus};
use skystream_engine::time::civil_from_days;
use skystream_engine::{Error, Result};

/// Where staged (not yet committed) files live, under the table's path.
pub const STAGING_DIR: &str = "_staging";

/// The `lake` connector.
pub struct LakeConnector;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partitioning {
    Hour,
    Day,
    None,
}

#[derive(Debug, Clone)]
struct Config {
    path: String,
    s3: BTreeMap<String, String>,
    partitioning: Partitioning,
    /// Column deciding a row's partition.
    time_column: Option<usize>,
    rollover_rows: usize,
    rollover_bytes: usize,
    rollover_interval: Duration,
    row_group_rows: usize,
    zstd_level: i32,
}

fn config(table: &TableDef, schema: &SchemaRef) -> Result<Config> {
    let mut o = table.options();
    let path = o.take_required("path")?;
    let s3 = o.take_prefixed("s3_");
    let partitioning = match o
        .take_choice("partition_by", &["hour", "day", "none"])?
        .as_deref()
    {
        None | Some("hour") => Partitioning::Hour,
        Some("day") => Partitioning::Day,
        _ => Partitioning::None,
    };
    let time_column = match o.take("time_column") {
        Some(c) => Some(table.sink_column(schema, "time_column", &c)?),
        None => schema
            .fields()
            .iter()
            .position(|f| matches!(f.data_type(), DataType::Timestamp(_, _))),
    };
    if let Some(c) = time_column
        && !matches!(
            schema.field(c).data_type(),
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
        )
    {
        return Err(Error::plan(format!(
            "table '{}': time_column '{}' must be a TIMESTAMP or DATE",
            table.name,
            schema.field(c).name()
        )));
    }
    if time_column.is_none() && partitioning != Partitioning::None {
        return Err(Error::plan(format!(
            "table '{}': no TIMESTAMP column to partition by: name one with time_column, \
             or set partition_by = 'none'",
            table.name
        )));
    }
    let rollover_rows = o
        .take_parsed::<usize>("rollover_rows")?
        .unwrap_or(1_000_000);
    let rollover_bytes = o
        .take_parsed::<usize>("rollover_bytes")?
        .unwrap_or(128 << 20);
    let rollover_interval = o
        .take_duration("rollover_interval")?
        .unwrap_or(Duration::from_secs(300));
    let row_group_rows = o
        .take_parsed::<usize>("row_group_rows")?
        .unwrap_or(128 * 1024);
    let zstd_level = o.take_parsed::<i32>("zstd_level")?.unwrap_or(3);
    if rollover_rows == 0 || rollover_bytes == 0 || row_group_rows == 0 {
        return Err(Error::plan(format!(
            "table '{}': rollover_rows, rollover_bytes and row_group_rows must be positive",
            table.name
        )));
    }
    ZstdLevel::try_new(zstd_level)
        .map_err(|e| Error::plan(format!("table '{}': zstd_level: {e}", table.name)))?;
    o.finish()?;
    // The location's syntax and S3 options; nothing is created or contacted yet.
    StoreLocation::validate(&path, &s3)?;
    Ok(Config {
        path,
        s3,
        partitioning,
        time_column,
        rollover_rows,
        rollover_bytes,
        rollover_interval,
        row_group_rows,
        zstd_level,
    })
}

impl Connector for LakeConnector {
    fn name(&self) -> &str {
        "lake"
    }

    fn resources(&self, table: &TableDef) -> Vec<Resource> {
        let mut o = table.options();
        let path = o.take("path").unwrap_or_default();
        StoreLocation::resources(&path, &o.take_prefixed("s3_"))
    }

    fn description(&self) -> &str {
        "sink: Parquet files (zstd, Hive partitions dt=/hour=) in a directory or an S3 bucket, committed with checkpoints"
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn validate_sink(&self, table: &TableDef, schema: &SchemaRef) -> Result<()> {
        config(table, schema).map(|_| ())
    }

    fn create_sink(&self, table: &TableDef, schema: SchemaRef) -> Result<Box<dyn Sink>> {
        let config = config(table, &schema)?;
        let location = StoreLocation::open(&config.path, &config.s3)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(config.zstd_level).expect("checked"),
            ))
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .set_created_by(format!("skystream {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Box::new(LakeSink {
            table: table.name.clone(),
            config,
            location,
            schema,
            props,
            pipeline: "pipeline".into(),
            checkpoints: false,
            epoch: 0,
            seq: 0,
            open: BTreeMap::new(),
            closed: Vec::new(),
            staged: Vec::new(),
            status: Arc::default(),
        }))
    }
}

/// A file being written.
struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    rows: usize,
    opened: Instant,
    /// Path relative to the table's root, when committed.
    name: String,
}

/// A file closed but not uploaded yet (an upload failed; it is retried).
struct ClosedFile {
    data: bytes::Bytes,
    name: String,
}

/// What the sink's entry in a checkpoint holds: the staged files that checkpoint commits
/// (relative paths: staging name, final name).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LakeState {
    files: Vec<(String, String)>,
}

struct LakeSink {
    table: String,
    config: Config,
    location: StoreLocation,
    schema: SchemaRef,
    props: WriterProperties,
    pipeline: String,
    checkpoints: bool,
    /// Epoch the files being written belong to (the next checkpoint's).
    epoch: u64,
    /// Files opened in this epoch so far.
    seq: u32,
    /// Open files by partition directory.
    open: BTreeMap<String, OpenFile>,
    closed: Vec<ClosedFile>,
    /// Uploaded to staging, waiting for their checkpoint: (staging, final) relative paths.
    staged: Vec<(String, String)>,
    status: Arc<SinkStatus>,
}

/// `dt=YYYY-MM-DD/hour=HH` of a time in milliseconds.
fn partition_of(ms: i64, p: Partitioning) -> String {
    let days = ms.div_euclid(86_400_000);
    let hour = ms.rem_euclid(86_400_000) / 3_600_000;
    let (y, m, d) = civil_from_days(days);
    match p {
        Partitioning::Hour => format!("dt={y:04}-{m:02}-{d:02}/hour={hour:02}"),
        Partitioning::Day => format!("dt={y:04}-{m:02}-{d:02}"),
        Partitioning::None => String::new(),
    }
}

/// Moves a staged file to its final name. Done already (a restore repeating a commit) is
/// fine; a staged file that vanished without its final file is lost data: an error.
async fn commit_file(
    location: &StoreLocation,
    table: &str,
    staging: &str,
    name: &str,
) -> Result<()> {
    let from = location.child(staging);
    let to = location.child(name);
    if location.rename(&from, &to).await? || location.read(&to).await?.is_some() {
        return Ok(());
    }
    Err(Error::connector(
        table,
        format!("staged file {staging} of a stored checkpoint is gone and {name} does not exist"),
    ))
}

/// Hive's name for the partition of rows whose partition value is NULL.
const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

impl LakeSink {
    fn err(&self, e: impl ToString) -> Error {
        Error::connector(&self.table, e)
    }

    /// The rows of `batch` by partition directory.
    fn split(&self, batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>> {
        let Some(c) = self.time_column() else {
            return Ok(vec![(String::new(), batch.clone())]);
        };
        let ms = cast(
            batch.column(c),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let ms = ms.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        // Group rows by an integer bucket (hour or day; None for NULL) and format each
        // bucket's directory once, not per row.
        let bucket_ms: i64 = match self.config.partitioning {
            Partitioning::Hour => 3_600_000,
            _ => 86_400_000,
        };
        let bucket = |i: usize| (!ms.is_null(i)).then(|| ms.value(i).div_euclid(bucket_ms));
        let first = bucket(0);
        let mut rows: BTreeMap<Option<i64>, Vec<u32>> = BTreeMap::new();
        if (1..batch.num_rows()).all(|i| bucket(i) == first) {
            return Ok(vec![(self.partition_dir(first, bucket_ms), batch.clone())]);
        }
        for i in 0..batch.num_rows() {
            rows.entry(bucket(i)).or_default().push(i as u32);
        }
        rows.into_iter()
            .map(|(b, idx)| {
                let part = take_record_batch(batch, &UInt32Array::from(idx))?;
                Ok((self.partition_dir(b, bucket_ms), part))
            })
            .collect()
    }

    /// The directory of a partition bucket (`None`: rows whose time is NULL).
    fn partition_dir(&self, bucket: Option<i64>, bucket_ms: i64) -> String {
        match bucket {
            Some(b) => partition_of(b * bucket_ms, self.config.partitioning),
            None => match self.config.partitioning {
                Partitioning::Hour => format!("dt={NULL_PARTITION}/hour={NULL_PARTITION}"),
                _ => format!("dt={NULL_PARTITION}"),
            },
        }
    }

    fn time_column(&self) -> Option<usize> {
        match self.config.partitioning {
            Partitioning::None => None,
            _ => self.config.time_column,
        }
    }

    fn file_name(&self, partition: &str) -> String {
        let file = format!(
            "part-{}-{}-{:08}-{:05}.parquet",
            self.pipeline, self.table, self.epoch, self.seq
        );
        if partition.is_empty() {
            file
        } else {
            format!("{partition}/{file}")
        }
    }

    fn staging_dir(&self) -> String {
        format!("{STAGING_DIR}/{}-{}", self.pipeline, self.table)
    }

    fn staging_name(&self, name: &str) -> String {
        format!(
            "{}/{}.inprogress",
            self.staging_dir(),
            name.replace('/', "_")
        )
    }

    fn close(&mut self, partition: &str) -> Result<()> {
        if let Some(f) = self.open.remove(partition) {
            let data = f.writer.into_inner().map_err(|e| self.err(e))?;
            self.closed.push(ClosedFile {
                data: data.into(),
                name: f.name,
            });
        }
        Ok(())
    }

    fn close_all(&mut self) -> Result<()> {
        let parts: Vec<String> = self.open.keys().cloned().collect();
        for p in parts {
            self.close(&p)?;
        }
        Ok(())
    }

    /// Uploads closed files: to staging with checkpoints, to their final place without.
    async fn upload(&mut self) -> Result<()> {
        while let Some(f) = self.closed.first() {
            let target = if self.checkpoints {
                self.staging_name(&f.name)
            } else {
                f.name.clone()
            };
            let path = self.location.child(&target);
            match self.location.write(&path, f.data.clone()).await {
                Ok(()) => {
                    self.status.degraded.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    self.status.degraded.store(true, Ordering::Relaxed);
                    self.status.retries.fetch_add(1, Ordering::Relaxed);
                    return Err(self.err(e));
                }
            }
            let f = self.closed.remove(0);
            if self.checkpoints {
                self.staged.push((target, f.name));
            } else {
                tracing::debug!(table = %self.table, file = %f.name, "lake file written");
            }
        }
        Ok(())
    }

    fn roll_due(&self, f: &OpenFile) -> bool {
        f.rows >= self.config.rollover_rows
            || f.writer.bytes_written() + f.writer.in_progress_size() >= self.config.rollover_bytes
            || f.opened.elapsed() >= self.config.rollover_interval
    }
}

impl Sink for LakeSink {
    fn status(&self) -> Option<Arc<SinkStatus>> {
        Some(self.status.clone())
    }

    fn start(&mut self, start: SinkStart) -> BoxFuture<'_, Result<()>> {
        async move {
            self.pipeline = start.pipeline;
            self.checkpoints = start.checkpoints;
            self.location.check().await?;
            if !self.checkpoints {
                return Ok(());
            }
            self.epoch = 1;
            if let Some((epoch, state)) = start.restored {
                let state: LakeState = serde_json::from_value(state)
                    .map_err(|e| self.err(format!("bad checkpoint state: {e}")))?;
                for (staging, name) in &state.files {
                    commit_file(&self.location, &self.table, staging, name).await?;
                }
                self.epoch = epoch + 1;
            }
            // Staged files of checkpoints that never completed: their rows will be replayed.
            let stale = self.location.list(&self.staging_dir()).await?;
            for (p, _) in stale {
                self.location.delete(&p).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<()>> {
        async move {
            if batch.num_rows() == 0 {
                return Ok(());
            }
            for (partition, rows) in self.split(&batch)? {
                if !self.open.contains_key(&partition) {
                    let name = self.file_name(&partition);
                    self.seq += 1;
                    let writer = ArrowWriter::try_new(
                        Vec::with_capacity(1 << 20),
                        self.schema.clone(),
                        Some(self.props.clone()),
                    )
                    .map_err(|e| self.err(e))?;
                    self.open.insert(
                        partition.clone(),
                        OpenFile {
                            writer,
                            rows: 0,
                            opened: Instant::now(),
                            name,
                        },
                    );
                }
                let f = self.open.get_mut(&partition).expect("opened above");
                f.writer
                    .write(&rows)
                    .map_err(|e| Error::connector(&self.table, e))?;
                f.rows += rows.num_rows();
                if self.roll_due(&self.open[&partition]) {
                    self.close(&partition)?;
                }
            }
            // Files left open long enough roll too (a quiet partition still gets committed).
            let due: Vec<String> = self
                .open
                .iter()
                .filter(|(_, f)| f.opened.elapsed() >= self.config.rollover_interval)
                .map(|(p, _)| p.clone())
                .collect();
            for p in due {
                self.close(&p)?;
            }
            if !self.closed.is_empty() {
                // A failed upload is kept and retried at the next roll or checkpoint.
                if let Err(e) = self.upload().await {
                    tracing::warn!(table = %self.table, "lake upload failed, will retry: {e}");
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn precommit(&mut self, epoch: u64) -> BoxFuture<'_, Result<serde_json::Value>> {
        async move {
            self.close_all()?;
            self.upload().await?;
            let state = LakeState {
                files: self.staged.clone(),
            };
            // Files opened from now on belong to the next checkpoint.
            self.epoch = epoch + 1;
            self.seq = 0;
            serde_json::to_value(state).map_err(|e| self.err(e))
        }
        .boxed()
    }

    fn commit(&mut self, _epoch: u64) -> BoxFuture<'_, Result<()>> {
        async move {
            while let Some((staging, name)) = self.staged.first().cloned() {
                commit_file(&self.location, &self.table, &staging, &name).await?;
                self.staged.remove(0);
            }
            Ok(())
        }
        .boxed()
    }

    fn flush(&mut self) -> BoxFuture<'_, Result<()>> {
        async move {
            if self.checkpoints {
                // Committed by the pipeline's last checkpoint.
                return Ok(());
            }
            self.close_all()?;
            self.upload().await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_utc_hours() {
        // 2024-02-29T23:59:59.999Z and the next millisecond.
        let ms = 1_709_251_199_999;
        assert_eq!(
            partition_of(ms, Partitioning::Hour),
            "dt=2024-02-29/hour=23"
        );
        assert_eq!(
            partition_of(ms + 1, Partitioning::Hour),
            "dt=2024-03-01/hour=00"
        );
        assert_eq!(partition_of(ms + 1, Partitioning::Day), "dt=2024-03-01");
        assert_eq!(
            partition_of(-1, Partitioning::Hour),
            "dt=1969-12-31/hour=23"
        );
    }
}
