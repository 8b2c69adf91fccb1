use datafusion::error::DataFusionError;

/// Errors of the streaming runtime and its connectors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline that cannot be built as written (bad option, unsupported construct, ...).
    #[error("{0}")]
    Plan(String),
    /// A connector failed at run time (I/O, a service that is down, ...).
    #[error("{connector}: {message}")]
    Connector { connector: String, message: String },
    /// An operator's state outgrew the pipeline's memory limit.
    #[error("out of memory: {0}")]
    MemoryLimit(String),
    /// The pipeline was stopped while this was in progress.
    #[error("stopped: {0}")]
    Stopped(String),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn plan(msg: impl Into<String>) -> Self {
        Error::Plan(msg.into())
    }

    pub fn connector(connector: impl Into<String>, message: impl ToString) -> Self {
        Error::Connector {
            connector: connector.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
