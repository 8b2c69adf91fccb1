//! Checkpoints: a consistent snapshot of a pipeline — source positions, watermarks, window
//! state, and what each sink pre-committed — stored as one object per epoch.
//!
//! The pipeline runs on one task, so a snapshot taken between two input events is consistent
//! by construction: every event before the recorded positions is in the window state and in
//! what the sinks received, and none after. A checkpoint is one object,
//! `chk-{epoch:012}.ckpt`, written with a single atomic put (a local rename or an S3 PUT), so
//! a reader sees a whole checkpoint or none. Restore takes the newest object that decodes and
//! whose checksum holds, so a damaged newest checkpoint falls back to the one before.
//!
//! Layout: `SKYCHK01`, a little-endian u32 length and the JSON [`Manifest`], a u32 count of
//! Arrow IPC blobs each preceded by its u64 length (the window operators' state arrays), and a
//! CRC-32 of everything before it.

use std::io::Cursor;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::objstore::StoreLocation;
use crate::source::Position;
use crate::watermark::TrackerCheckpoint;
use crate::window::WindowCheckpoint;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"SKYCHK01";
/// Format 2: window state as slices (the slice operator); format 1 held per-window panes.
pub const FORMAT: u32 = 2;

/// Where and how often a pipeline checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// The pipeline's own checkpoint prefix (one pipeline per location).
    pub location: StoreLocation,
    pub interval: Duration,
    /// Checkpoints kept (older ones are deleted after a newer one commits).
    pub retain: usize,
}

impl CheckpointConfig {
    pub fn new(location: StoreLocation) -> Self {
        Self {
            location,
            interval: Duration::from_secs(10),
            retain: 3,
        }
    }
}

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub pipeline: String,
    pub epoch: u64,
    /// Wall-clock time of the snapshot (ms since the Unix epoch).
    pub created_ms: i64,
    pub sources: Vec<SourceCheckpoint>,
    pub flows: Vec<FlowCheckpoint>,
    pub sinks: Vec<SinkCheckpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceCheckpoint {
    pub name: String,
    /// Position after the last input the snapshot includes (`None`: nothing read yet).
    pub position: Option<Position>,
    pub tracker: TrackerCheckpoint,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowCheckpoint {
    pub name: String,
    pub watermark: i64,
    /// Each window stage's state, in stage order, and the indices of its blobs.
    pub windows: Vec<(WindowCheckpoint, Vec<usize>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkCheckpoint {
    pub name: String,
    pub state: serde_json::Value,
}

/// A decoded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub manifest: Manifest,
    pub blobs: Vec<RecordBatch>,
}

impl Checkpoint {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(MAGIC);
        let manifest = serde_json::to_vec(&self.manifest)
            .map_err(|e| Error::plan(format!("checkpoint manifest: {e}")))?;
        out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
        out.extend_from_slice(&manifest);
        out.extend_from_slice(&(self.blobs.len() as u32).to_le_bytes());
        for b in &self.blobs {
            let at = out.len();
            out.extend_from_slice(&0u64.to_le_bytes());
            let mut w = StreamWriter::try_new(&mut out, &b.schema())?;
            w.write(b)?;
            w.finish()?;
            drop(w);
            let len = (out.len() - at - 8) as u64;
            out[at..at + 8].copy_from_slice(&len.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// The format a whole (checksummed) checkpoint declares, read before the rest of it.
    pub fn format_of(data: &[u8]) -> Option<u32> {
        if data.len() < MAGIC.len() + 12 || &data[..8] != MAGIC {
            return None;
        }
        let (body, tail) = data.split_at(data.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(tail.try_into().ok()?) {
            return None;
        }
        let mut r = Reader { data: body, at: 8 };
        let mlen = r.u32().ok()? as usize;
        let v: serde_json::Value = serde_json::from_slice(r.take(mlen).ok()?).ok()?;
        v.get("format")?.as_u64().map(|f| f as u32)
    }

    pub fn decode(data: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::plan(format!("damaged checkpoint: {why}"));
        if data.len() < MAGIC.len() + 4 + 4 + 4 || &data[..8] != MAGIC {
            return Err(bad("not a skystream checkpoint"));
        }
        let (body, tail) = data.split_at(data.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader { data: body, at: 8 };
        let mlen = r.u32()? as usize;
        let manifest: Manifest =
            serde_json::from_slice(r.take(mlen)?).map_err(|e| bad(&format!("manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(bad(&format!(
                "format {} (expected {FORMAT})",
                manifest.format
            )));
        }
        let n = r.u32()? as usize;
        let mut blobs = Vec::with_capacity(n);
        for _ in 0..n {
            let len = r.u64()? as usize;
            let mut ipc = StreamReader::try_new(Cursor::new(r.take(len)?), None)?;
            let b = ipc.next().ok_or_else(|| bad("empty blob"))??;
            blobs.push(b);
        }
        Ok(Self { manifest, blobs })
    }
}

/// A cursor over a checkpoint's bytes.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let s = self
            .data
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| Error::plan("damaged checkpoint: truncated"))?;
        self.at += n;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// Reads and writes the checkpoints of one pipeline.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    pub location: StoreLocation,
}

/// What storing a checkpoint cost.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    pub bytes: usize,
    pub elapsed: Duration,
}

impl CheckpointStore {
    pub fn new(location: StoreLocation) -> Self {
        Self { location }
    }

    fn path(&self, epoch: u64) -> Path {
        self.location.child(&format!("chk-{epoch:012}.ckpt"))
    }

    fn epoch_of(path: &Path) -> Option<u64> {
        let name = path.filename()?;
        name.strip_prefix("chk-")?
            .strip_suffix(".ckpt")?
            .parse()
            .ok()
    }

    /// Epochs present, newest first.
    pub async fn epochs(&self) -> Result<Vec<u64>> {
        let mut e: Vec<u64> = self
            .location
            .list("")
            .await?
            .iter()
            .filter(|(p, _)| p.parts().count() == self.location.prefix.parts().count() + 1)
            .filter_map(|(p, _)| Self::epoch_of(p))
            .collect();
        e.sort_unstable_by(|a, b| b.cmp(a));
        Ok(e)
    }

    /// The newest checkpoint that reads back whole (damaged ones are logged and skipped).
    pub async fn latest(&self) -> Result<Option<Checkpoint>> {
        for epoch in self.epochs().await? {
            let Some(data) = self.location.read(&self.path(epoch)).await? else {
                continue;
            };
            // A whole checkpoint of another format is not damage to skip: restoring an older
            // one (or none) would silently replay from elsewhere.
            if let Some(f) = Checkpoint::format_of(&data)
                && f != FORMAT
            {
                return Err(Error::plan(format!(
                    "checkpoint {epoch} at {} is in format {f}, written by another skystream \
                     version; this one reads format {FORMAT} (window state is kept as slices \
                     since format 2). Start from a new checkpoint location, or resume with \
                     the version that wrote it",
                    self.location.url
                )));
            }
            match Checkpoint::decode(&data) {
                Ok(c) if c.manifest.epoch == epoch => return Ok(Some(c)),
                Ok(_) => tracing::warn!(epoch, "checkpoint names another epoch; skipped"),
                Err(e) => tracing::warn!(epoch, "skipping checkpoint: {e}"),
            }
        }
        Ok(None)
    }

    /// Stores a checkpoint (one atomic put).
    pub async fn write(&self, c: &Checkpoint) -> Result<Stored> {
        let started = Instant::now();
        let data = c.encode()?;
        let bytes = data.len();
        self.location
            .write(&self.path(c.manifest.epoch), data)
            .await?;
        Ok(Stored {
            bytes,
            elapsed: started.elapsed(),
        })
    }

    /// Deletes checkpoints older than the newest `retain` up to `newest`.
    pub async fn prune(&self, newest: u64, retain: usize) -> Result<()> {
        for epoch in self.epochs().await? {
            if epoch + (retain.max(1) as u64) <= newest {
                self.location.delete(&self.path(epoch)).await?;
            }
        }
        Ok(())
    }
}
