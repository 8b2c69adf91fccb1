//! Where the lake and checkpoints live: a local directory or an S3-compatible bucket (MinIO,
//! AWS, moto), behind one [`ObjectStore`].
//!
//! A location is a URL: `s3://bucket/prefix`, `file:///abs/dir`, or a plain directory path.
//! S3 settings come from options (`s3_endpoint`, `s3_region`, `s3_access_key_id`,
//! `s3_secret_access_key`, `s3_path_style`, `s3_allow_http`) and otherwise from the usual
//! environment (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! ...). Requests are retried with backoff for up to [`RETRY_TIMEOUT`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::{Error, Result};

/// How long one request is retried (with exponential backoff) before it fails.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

/// The option keys [`StoreLocation::open`] understands (without their `s3_` prefix).
pub const S3_OPTIONS: &[&str] = &[
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "path_style",
    "allow_http",
];

/// A prefix in an object store.
#[derive(Debug, Clone)]
pub struct StoreLocation {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The location as given (for messages).
    pub url: String,
}

impl StoreLocation {
    /// Checks a location's syntax and S3 options without creating or contacting anything.
    pub fn validate(url: &str, s3: &BTreeMap<String, String>) -> Result<()> {
        if let Some(k) = s3.keys().find(|k| !S3_OPTIONS.contains(&k.as_str())) {
            return Err(Error::plan(format!(
                "unknown S3 option 's3_{k}' (known: {})",
                S3_OPTIONS
                    .iter()
                    .map(|o| format!("s3_{o}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        match url.strip_prefix("s3://") {
            Some(rest) => {
                let bucket = rest.split('/').next().unwrap_or("");
                if bucket.is_empty() {
                    return Err(Error::plan(format!("'{url}': no bucket in the S3 URL")));
                }
                // The bucket and the region become part of a host name: nothing else may.
                crate::address::check_bucket(bucket)?;
                if let Some(r) = s3.get("region") {
                    crate::address::check_region(r)?;
                }
                if let Some(e) = s3.get("endpoint") {
                    crate::address::parse_url("s3_endpoint", e, &["http", "https"])?;
                }
                if url.chars().any(|c| c == '\\' || c.is_control()) {
                    return Err(Error::plan(format!(
                        "'{url}': backslashes and control characters are not allowed"
                    )));
                }
            }
            None => {
                if !s3.is_empty() {
                    return Err(Error::plan(format!(
                        "'{url}' is not an s3:// location: s3_* options do not apply"
                    )));
                }
                if url.strip_prefix("file://").unwrap_or(url).is_empty() {
                    return Err(Error::plan("empty path"));
                }
                if url.contains("://") && !url.starts_with("file://") {
                    return Err(Error::plan(format!(
                        "'{url}': unsupported scheme (use s3://bucket/prefix, file:///dir or a directory)"
                    )));
                }
            }
        }
        for (k, v) in s3 {
            if matches!(k.as_str(), "path_style" | "allow_http") {
                parse_bool(k, v)?;
            }
        }
        Ok(())
    }

    /// Opens `url` with S3 settings `s3` (keys of [`S3_OPTIONS`]); a local directory is
    /// created. Nothing remote is contacted yet: call [`StoreLocation::check`] to find a
    /// missing bucket or bad credentials up front.
    pub fn open(url: &str, s3: &BTreeMap<String, String>) -> Result<Self> {
        Self::validate(url, s3)?;
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // Credentials given with the location are used alone: none of the environment's
            // (a session token, say) is mixed in with them.
            let own_credentials = s3.contains_key("access_key_id");
            let base = if own_credentials {
                let mut b = AmazonS3Builder::new();
                if let Ok(r) =
                    std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                {
                    b = b.with_region(r);
                }
                b
            } else {
                AmazonS3Builder::from_env()
            };
            let mut b = base
                .with_bucket_name(bucket)
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_secs(5),
                        base: 2.0,
                    },
                    max_retries: 10,
                    retry_timeout: RETRY_TIMEOUT,
                })
                .with_client_options(
                    ClientOptions::new()
                        .with_connect_timeout(Duration::from_secs(5))
                        .with_timeout(Duration::from_secs(60)),
                );
            if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                b = b.with_region("us-east-1");
            }
            let endpoint = s3
                .get("endpoint")
                .cloned()
                .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
                .or_else(|| std::env::var("AWS_ENDPOINT").ok());
            if let Some(e) = &endpoint {
                b = b.with_endpoint(e.clone());
                // A custom endpoint (MinIO) is addressed path-style over whatever scheme it names.
                b = b
                    .with_virtual_hosted_style_request(false)
                    .with_allow_http(e.starts_with("http://"));
            }
            for (k, v) in s3 {
                b = match k.as_str() {
                    "region" => b.with_region(v),
                    "access_key_id" => b.with_access_key_id(v),
                    "secret_access_key" => b.with_secret_access_key(v),
                    "session_token" => b.with_token(v),
                    "path_style" => b.with_virtual_hosted_style_request(!parse_bool(k, v)?),
                    "allow_http" => b.with_allow_http(parse_bool(k, v)?),
                    _ => b,
                };
            }
            let store = b
                .build()
                .map_err(|e| Error::plan(format!("'{url}': {e}")))?;
            Ok(Self {
                store: Arc::new(store),
                prefix: Path::from(prefix.trim_matches('/')),
                url: url.to_string(),
            })
        } else {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::plan(format!("cannot create directory '{dir}': {e}")))?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| Error::plan(format!("'{dir}': {e}")))?;
            Ok(Self {
                store: Arc::new(store),
                prefix: Path::default(),
                url: url.to_string(),
            })
        }
    }

    /// What a location reaches outside the process, for a sandbox: the S3 host it connects to
    /// (none for the server's own `AWS_ENDPOINT_URL`), and whether the server's own credentials
    /// (the `AWS_*` environment) would sign its requests.
    pub fn resources(url: &str, s3: &BTreeMap<String, String>) -> Vec<crate::connector::Resource> {
        use crate::connector::Resource;
        let Some(rest) = url.strip_prefix("s3://") else {
            return vec![Resource::LocalPath(url.to_string())];
        };
        if let Err(e) = Self::validate(url, s3) {
            return vec![Resource::Invalid(e.to_string())];
        }
        let mut r = Vec::new();
        match s3.get("endpoint") {
            Some(e) => r.extend(Resource::hosts(
                crate::address::parse_url("s3_endpoint", e, &["http", "https"]).map(|e| vec![e]),
            )),
            None if std::env::var_os("AWS_ENDPOINT_URL").is_some()
                || std::env::var_os("AWS_ENDPOINT").is_some() => {}
            None => {
                let region = s3
                    .get("region")
                    .cloned()
                    .or_else(|| std::env::var("AWS_REGION").ok())
                    .unwrap_or_else(|| "us-east-1".into());
                let bucket = rest.split('/').next().unwrap_or("");
                r.push(Resource::Host(format!(
                    "{bucket}.s3.{region}.amazonaws.com"
                )));
            }
        }
        if !s3.contains_key("access_key_id") {
            r.push(Resource::ServerCredentials(
                "S3 (the AWS_* environment; give s3_access_key_id and s3_secret_access_key)".into(),
            ));
        }
        r
    }

    /// A path under this location.
    pub fn child(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Lists (one request) under the prefix: a missing bucket, bad credentials or an endpoint
    /// that does not answer become a clear error now, not at the first write.
    pub async fn check(&self) -> Result<()> {
        let r = tokio::time::timeout(
            RETRY_TIMEOUT + Duration::from_secs(5),
            self.store.list_with_delimiter(Some(&self.prefix)),
        )
        .await;
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::plan(format!(
                "object store '{}' is not usable: {}",
                self.url,
                describe(&e)
            ))),
            Err(_) => Err(Error::plan(format!(
                "object store '{}' did not answer",
                self.url
            ))),
        }
    }

    /// Every object under `rel` (recursively), with its size.
    pub async fn list(&self, rel: &str) -> Result<Vec<(Path, u64)>> {
        let p = self.child(rel);
        let items: Vec<_> = self
            .store
            .list(Some(&p))
            .map_ok(|m| (m.location, m.size))
            .try_collect()
            .await
            .map_err(|e| self.error(&e))?;
        Ok(items)
    }

    /// Reads a whole object; `None` if it does not exist.
    pub async fn read(&self, path: &Path) -> Result<Option<bytes::Bytes>> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.error(&e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// Writes a whole object atomically (readers see all of it or none of it).
    pub async fn write(&self, path: &Path, data: impl Into<bytes::Bytes>) -> Result<()> {
        self.store
            .put(path, data.into().into())
            .await
            .map(|_| ())
            .map_err(|e| self.error(&e))
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&e)),
        }
    }

    /// Moves an object (a rename on a local disk, copy + delete on S3); `false` when `from`
    /// does not exist.
    pub async fn rename(&self, from: &Path, to: &Path) -> Result<bool> {
        match self.store.rename(from, to).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(&e)),
        }
    }

    pub fn error(&self, e: &object_store::Error) -> Error {
        Error::connector(format!("object store {}", self.url), describe(e))
    }
}

/// The error with its sources (object_store's own Display hides the S3 error code).
fn describe(e: &object_store::Error) -> String {
    let mut s = match e {
        object_store::Error::NotFound { path, .. } => format!("not found: {path}"),
        other => other.to_string(),
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(Error::plan(format!(
            "option 's3_{key}' must be true or false, not '{v}'"
        ))),
    }
}
