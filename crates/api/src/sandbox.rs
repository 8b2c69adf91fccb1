//! What SQL submitted over HTTP may reach. The planner already accepts only connector tables,
//! views, INSERT INTO and SELECT (no `CREATE EXTERNAL TABLE`, `COPY` or other statements) and
//! only registered connectors; the sandbox also refuses, per table, files of the server, hosts
//! not on an allow-list, raw client settings, and connectors kept for local use.

use std::sync::Arc;

use skystream_engine::connector::{Connector, Resource, TableDef};
use skystream_sql::TableCheck;

/// The sandbox of an API server.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Tables may read or write files of the server (`replay`, `file`, a local lake, ...).
    pub allow_local_files: bool,
    /// Hosts network endpoints may name: exact names, `*.suffix`, or `*` for any.
    pub allowed_hosts: Vec<String>,
    /// Raw client settings (`kafka.*` librdkafka properties) are allowed.
    pub allow_raw_settings: bool,
    /// Tables may use the server's own credentials (the `AWS_*` environment for an S3 lake).
    pub allow_server_credentials: bool,
    /// Connectors that cannot be used at all.
    pub denied_connectors: Vec<String>,
}

impl Default for Sandbox {
    /// No local files, loopback and Bluesky's Jetstream hosts only, no raw settings, and no
    /// `memory` sink (its rows would grow without bound inside the server).
    fn default() -> Self {
        Self {
            allow_local_files: false,
            allowed_hosts: ["127.0.0.1", "localhost", "::1", "*.bsky.network"]
                .map(String::from)
                .to_vec(),
            allow_raw_settings: false,
            allow_server_credentials: false,
            denied_connectors: vec!["memory".into()],
        }
    }
}

impl Sandbox {
    /// Everything allowed (a trusted, local server).
    pub fn open() -> Self {
        Self {
            allow_local_files: true,
            allowed_hosts: vec!["*".into()],
            allow_raw_settings: true,
            allow_server_credentials: true,
            denied_connectors: Vec::new(),
        }
    }

    /// The planner hook enforcing this sandbox.
    pub fn table_check(&self) -> TableCheck {
        let me = self.clone();
        Arc::new(move |def: &TableDef, conn: &dyn Connector| me.check(def, conn))
    }

    pub fn check(&self, def: &TableDef, conn: &dyn Connector) -> Result<(), String> {
        let table = &def.name;
        if self.denied_connectors.iter().any(|c| c == conn.name()) {
            return Err(format!(
                "table '{table}': connector '{}' is not available through the API",
                conn.name()
            ));
        }
        for r in conn.resources(def) {
            match r {
                Resource::LocalPath(p) if !self.allow_local_files => {
                    return Err(format!(
                        "table '{table}': '{p}' is a file of the server; the API does not let \
                         queries read or write local files (use s3:// for the lake)"
                    ));
                }
                Resource::LocalSocket(p) if !self.allow_local_files => {
                    return Err(format!(
                        "table '{table}': '{p}' is a local socket of the server; the API does \
                         not let queries reach them"
                    ));
                }
                Resource::Host(host) if !self.host_allowed(&host) => {
                    return Err(format!(
                        "table '{table}': host '{host}' is not allowed (allowed: {}; the \
                         server's --allow-host adds more)",
                        self.allowed_hosts.join(", ")
                    ));
                }
                Resource::Invalid(why) => {
                    return Err(format!("table '{table}': {why}"));
                }
                Resource::UrlCredentials(hint) => {
                    return Err(format!(
                        "table '{table}': user names and passwords inside URLs are not \
                         allowed through the API ({hint})"
                    ));
                }
                Resource::ServerCredentials(what) if !self.allow_server_credentials => {
                    return Err(format!(
                        "table '{table}': it would use the server's own credentials for \
                         {what}; the API does not lend them (the server's \
                         --allow-server-credentials does)"
                    ));
                }
                Resource::RawSetting(k) if !self.allow_raw_settings => {
                    return Err(format!(
                        "table '{table}': option '{k}' (a raw client setting) is not allowed \
                         through the API"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_hosts.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            a == "*"
                || a == host
                || a.strip_prefix("*.")
                    .is_some_and(|suffix| host.ends_with(&format!(".{suffix}")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_exact_names_and_suffixes() {
        let s = Sandbox::default();
        assert!(s.host_allowed("127.0.0.1"));
        assert!(s.host_allowed("jetstream1.us-west.bsky.network"));
        assert!(!s.host_allowed("bsky.network.evil.example"));
        assert!(!s.host_allowed("169.254.169.254"));
        assert!(Sandbox::open().host_allowed("anything"));
    }
}
