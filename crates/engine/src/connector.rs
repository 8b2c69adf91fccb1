//! Connectors: named factories of sources and sinks, resolved by the SQL planner from
//! `WITH (connector = '...')`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::options::Options;
use crate::sink::{MemoryTables, Sink};
use crate::source::Source;
use crate::{Error, Result};

/// A table as declared in `CREATE TABLE`: its name, its declared columns (if any) and the
/// options of its `WITH` clause (without `connector`).
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    pub connector: String,
    /// Columns as declared; `None` when the statement lists none (the format decides).
    pub declared_schema: Option<SchemaRef>,
    pub options: Options,
}

impl TableDef {
    /// The index of column `name` in `schema` (the rows a sink receives), for option `option`;
    /// an error naming the option and the available columns otherwise.
    pub fn sink_column(&self, schema: &SchemaRef, option: &str, name: &str) -> Result<usize> {
        schema.index_of(name).map_err(|_| {
            Error::plan(format!(
                "table '{}': {option} column '{name}' is not a column of the rows written (columns: {})",
                self.name,
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// A fresh copy of the options for a connector to consume.
    pub fn options(&self) -> Options {
        self.options.clone().for_connector(&self.connector)
    }
}

/// Something outside the process a table reaches, as a sandbox sees it (see
/// [`Connector::resources`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A file or directory on this machine.
    LocalPath(String),
    /// A socket of this machine (a Unix domain socket path).
    LocalSocket(String),
    /// A network host (a name or an IP address) the table connects to, as the client library
    /// that connects parses its address (see [`crate::address`]).
    Host(String),
    /// An address the connector cannot parse unambiguously, with why.
    Invalid(String),
    /// A user name or password written inside a URL.
    UrlCredentials(String),
    /// The server's own credentials (its environment, e.g. `AWS_*`) would be used, for what.
    ServerCredentials(String),
    /// A pass-through setting of a client library that may reach files or load code (e.g. a
    /// librdkafka property), named by its option.
    RawSetting(String),
}

impl Resource {
    /// The hosts of parsed endpoints, or why an address is refused.
    pub fn hosts(
        r: crate::Result<Vec<crate::address::Endpoint>>,
    ) -> impl Iterator<Item = Resource> {
        let v: Vec<Resource> = match r {
            Ok(v) => v.into_iter().map(|e| Resource::Host(e.host)).collect(),
            Err(e) => vec![Resource::Invalid(e.to_string())],
        };
        v.into_iter()
    }
}

/// A kind of source and/or sink.
pub trait Connector: Send + Sync {
    fn name(&self) -> &str;

    /// What a table of this connector reads or writes outside the process: files, network
    /// endpoints, raw client settings. An API server refuses tables that reach what its
    /// sandbox does not allow.
    fn resources(&self, table: &TableDef) -> Vec<Resource> {
        let _ = table;
        Vec::new()
    }

    /// One line for `skystream connectors` and error messages.
    fn description(&self) -> &str;

    /// Whether tables of this connector can be read.
    fn is_source(&self) -> bool {
        false
    }

    /// Whether tables of this connector can be written.
    fn is_sink(&self) -> bool {
        false
    }

    /// Validates a source table and returns the schema of its rows. Unknown options, a missing
    /// required option, or columns the format cannot produce are errors here, at planning time.
    fn source_schema(&self, table: &TableDef) -> Result<SchemaRef> {
        let _ = table;
        Err(Error::plan(format!(
            "connector '{}' cannot be read from (it is a sink)",
            self.name()
        )))
    }

    /// Creates the source of `table`, emitting the columns `projection` of its schema.
    fn create_source(&self, table: &TableDef, projection: &[usize]) -> Result<Box<dyn Source>> {
        let _ = (table, projection);
        Err(Error::plan(format!(
            "connector '{}' cannot be read from (it is a sink)",
            self.name()
        )))
    }

    /// Validates a sink table receiving rows of `schema`.
    fn validate_sink(&self, table: &TableDef, schema: &SchemaRef) -> Result<()> {
        let _ = (table, schema);
        Err(Error::plan(format!(
            "connector '{}' cannot be written to (it is a source)",
            self.name()
        )))
    }

    /// Creates the sink of `table` receiving rows of `schema`.
    fn create_sink(&self, table: &TableDef, schema: SchemaRef) -> Result<Box<dyn Sink>> {
        let _ = (table, schema);
        Err(Error::plan(format!(
            "connector '{}' cannot be written to (it is a source)",
            self.name()
        )))
    }
}

/// The connectors a pipeline may use, by name.
#[derive(Clone, Default)]
pub struct ConnectorRegistry {
    connectors: BTreeMap<String, Arc<dyn Connector>>,
    memory: MemoryTables,
}

impl ConnectorRegistry {
    /// A registry holding only the built-in `memory` sink.
    pub fn new() -> Self {
        let mut r = Self::default();
        r.register(Arc::new(MemoryConnector {
            tables: r.memory.clone(),
        }));
        r
    }

    pub fn register(&mut self, c: Arc<dyn Connector>) {
        self.connectors.insert(c.name().to_string(), c);
    }

    pub fn get(&self, name: &str) -> Result<Arc<dyn Connector>> {
        self.connectors.get(name).cloned().ok_or_else(|| {
            Error::plan(format!(
                "unknown connector '{name}' (available: {})",
                self.connectors
                    .keys()
                    .map(|k| format!("'{k}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    pub fn connectors(&self) -> impl Iterator<Item = &Arc<dyn Connector>> {
        self.connectors.values()
    }

    /// The tables written by `connector = 'memory'` sinks.
    pub fn memory(&self) -> &MemoryTables {
        &self.memory
    }
}

/// `connector = 'memory'`: keeps every row in memory, for tests (`WITH (connector = 'memory')`;
/// the table name is the key in [`ConnectorRegistry::memory`]).
struct MemoryConnector {
    tables: MemoryTables,
}

impl Connector for MemoryConnector {
    fn name(&self) -> &str {
        "memory"
    }

    fn description(&self) -> &str {
        "sink: keeps rows in memory (tests)"
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn validate_sink(&self, table: &TableDef, _schema: &SchemaRef) -> Result<()> {
        table.options().finish()
    }

    fn create_sink(&self, table: &TableDef, schema: SchemaRef) -> Result<Box<dyn Sink>> {
        self.validate_sink(table, &schema)?;
        Ok(Box::new(self.tables.sink(&table.name, schema)))
    }
}
