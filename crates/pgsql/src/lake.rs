//! Schema `lake`: one table per dataset of the lake — a directory of Parquet files written by
//! the `lake` sink, Hive-partitioned (`dt=YYYY-MM-DD/hour=HH/`) — read with DataFusion's
//! `ListingTable` straight from the object store (a local directory or S3/MinIO).
//!
//! Staged files (`_staging/`, not yet covered by a checkpoint) are not read: a listing table
//! skips files in directories that are not `key=value` partitions. Datasets are re-listed every
//! refresh interval and looked up on demand, and each query lists the files anew (the listing
//! cache's TTL is the refresh interval), so newly committed files and new datasets show up.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::execution::SessionState;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::path::Path;
use skystream_engine::objstore::StoreLocation;
use tracing::{debug, info, warn};

/// The URL the lake's object store is registered under in the session.
const STORE_URL: &str = "skystream-lake://lake/";

/// The lake as a DataFusion schema.
pub struct LakeSchema {
    loc: StoreLocation,
    /// For inferring a new dataset's schema (its runtime holds the lake's store).
    state: SessionState,
    tables: RwLock<BTreeMap<String, Arc<dyn TableProvider>>>,
}

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema")
            .field("lake", &self.loc.url)
            .finish_non_exhaustive()
    }
}

/// True for a dataset directory name (not `_staging`, `_checkpoints`, hidden or odd names).
fn is_dataset(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['_', '.'])
        && !name.contains('=')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
}

/// The Hive partition columns of a file path relative to its dataset (`dt=.../hour=.../f`),
/// or `None` when the file is not committed (under `_staging` or another hidden directory).
pub(crate) fn partition_columns(rel: &str) -> Option<Vec<String>> {
    let mut parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    parts.pop()?;
    let mut cols = Vec::new();
    for p in parts {
        match p.split_once('=') {
            Some((k, _)) if !k.is_empty() => cols.push(k.to_string()),
            _ => return None,
        }
    }
    Some(cols)
}

impl LakeSchema {
    /// Registers the lake's store with `ctx` and lists its datasets.
    pub async fn open(loc: StoreLocation, ctx: &SessionContext) -> Result<Arc<Self>> {
        let url = ObjectStoreUrl::parse(STORE_URL.trim_end_matches('/'))?;
        ctx.register_object_store(url.as_ref(), loc.store.clone());
        let schema = Arc::new(Self {
            loc,
            state: ctx.state(),
            tables: RwLock::new(BTreeMap::new()),
        });
        if let Err(e) = schema.refresh().await {
            warn!("lake '{}': {e} (retrying every refresh)", schema.loc.url);
        }
        Ok(schema)
    }

    fn dataset_path(&self, name: &str) -> Path {
        self.loc.child(name)
    }

    /// Lists the lake's datasets and opens the ones not seen yet.
    pub async fn refresh(&self) -> Result<()> {
        let listing = self
            .loc
            .store
            .list_with_delimiter(Some(&self.loc.prefix))
            .await?;
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename().map(str::to_string) else {
                continue;
            };
            if !is_dataset(&name) || self.tables.read().unwrap().contains_key(&name) {
                continue;
            }
            match self.open_dataset(&name).await {
                Ok(Some(t)) => {
                    info!(dataset = %name, "lake dataset is now a table");
                    self.tables.write().unwrap().insert(name, t);
                }
                Ok(None) => debug!(dataset = %name, "no committed file yet"),
                Err(e) => warn!(dataset = %name, "lake dataset not served: {e}"),
            }
        }
        Ok(())
    }

    /// Re-lists the lake every `every` while the schema is in use.
    pub fn keep_fresh(self: &Arc<Self>, every: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(schema) = weak.upgrade() else { break };
                if let Err(e) = schema.refresh().await {
                    warn!("lake '{}': {e}", schema.loc.url);
                }
            }
        });
    }

    /// A listing table over dataset `name`, or `None` while it has no committed file.
    async fn open_dataset(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let dir = self.dataset_path(name);
        let mut files = self.loc.store.list(Some(&dir));
        let mut partitions = None;
        while let Some(meta) = files.try_next().await? {
            let full = meta.location.as_ref();
            if !full.ends_with(".parquet") {
                continue;
            }
            let rel = full
                .strip_prefix(dir.as_ref())
                .unwrap_or(full)
                .trim_start_matches('/');
            if let Some(cols) = partition_columns(rel) {
                partitions = Some(cols);
                break;
            }
        }
        drop(files);
        let Some(partitions) = partitions else {
            return Ok(None);
        };
        let table_url = ListingTableUrl::parse(format!("{STORE_URL}{}/", dir.as_ref()))?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(
                partitions
                    .into_iter()
                    .map(|c| (c, DataType::Utf8))
                    .collect(),
            );
        let config = ListingTableConfig::new(table_url)
            .with_listing_options(options)
            .infer_schema(&self.state)
            .await?;
        Ok(Some(Arc::new(ListingTable::try_new(config)?)))
    }
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.read().unwrap().keys().cloned().collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.tables.read().unwrap().get(name) {
            return Ok(Some(t.clone()));
        }
        // A dataset committed since the last refresh.
        if !is_dataset(name) {
            return Ok(None);
        }
        match self.open_dataset(name).await {
            Ok(Some(t)) => {
                self.tables
                    .write()
                    .unwrap()
                    .insert(name.to_string(), t.clone());
                Ok(Some(t))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                warn!(dataset = %name, "lake dataset not served: {e}");
                Ok(None)
            }
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.read().unwrap().contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names() {
        assert!(is_dataset("keyword_counts"));
        assert!(is_dataset("trend-alerts"));
        assert!(!is_dataset("_staging"));
        assert!(!is_dataset("_checkpoints"));
        assert!(!is_dataset(".hidden"));
        assert!(!is_dataset("dt=2026-01-01"));
        assert!(!is_dataset(""));
    }

    #[test]
    fn partitions_of_a_path() {
        assert_eq!(
            partition_columns("dt=2026-12-01/hour=07/part-a-t-00000001-00000.parquet"),
            Some(vec!["dt".to_string(), "hour".to_string()])
        );
        assert_eq!(partition_columns("part.parquet"), Some(vec![]));
        assert_eq!(partition_columns("_staging/part.parquet"), None);
        assert_eq!(partition_columns("dt=2026-12-01/_tmp/part.parquet"), None);
    }
}
