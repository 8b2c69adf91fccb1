use std::fmt;

use datafusion::error::DataFusionError;

/// An error in a pipeline script, with the position (1-based line and column) of the construct
/// it names, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub message: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl SqlError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            line: None,
            column: None,
        }
    }

    pub fn at(message: impl Into<String>, line: u64, column: u64) -> Self {
        Self {
            message: message.into(),
            line: Some(line),
            column: Some(column),
        }
    }

    /// Sets the position unless one is already known.
    pub fn or_at(mut self, pos: Option<(u64, u64)>) -> Self {
        if self.line.is_none()
            && let Some((l, c)) = pos
        {
            self.line = Some(l);
            self.column = Some(c);
        }
        self
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{} (line {l}, column {c})", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for SqlError {}

impl From<skystream_engine::Error> for SqlError {
    fn from(e: skystream_engine::Error) -> Self {
        match e {
            skystream_engine::Error::DataFusion(d) => d.into(),
            other => SqlError::new(other.to_string()),
        }
    }
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        let pos = e
            .diagnostic()
            .and_then(|d| d.span)
            .map(|s| (s.start.line, s.start.column));
        let pos = pos.filter(|(l, _)| *l > 0);
        let msg = clean_message(&e);
        match pos {
            Some((l, c)) => SqlError::at(msg, l, c),
            None => parser_position(&msg)
                .map(|(l, c)| SqlError::at(msg.clone(), l, c))
                .unwrap_or_else(|| SqlError::new(msg)),
        }
    }
}

impl From<sqlparser_error::ParserError> for SqlError {
    fn from(e: sqlparser_error::ParserError) -> Self {
        let msg = e.to_string();
        let msg = msg
            .strip_prefix("sql parser error: ")
            .unwrap_or(&msg)
            .to_string();
        match parser_position(&msg) {
            Some((l, c)) => {
                let short = msg.split(" at Line: ").next().unwrap_or(&msg).to_string();
                SqlError::at(format!("syntax error: {short}"), l, c)
            }
            None => SqlError::new(format!("syntax error: {msg}")),
        }
    }
}

pub(crate) mod sqlparser_error {
    pub use datafusion::sql::sqlparser::parser::ParserError;
}

/// DataFusion's messages carry prefixes ("Error during planning: ") meant for developers.
fn clean_message(e: &DataFusionError) -> String {
    let inner = e.find_root();
    let s = inner.to_string();
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "SQL error: ",
        "Execution error: ",
        "This feature is not implemented: ",
    ] {
        if let Some(rest) = s.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    s
}

/// `... at Line: 3, Column: 7` (sqlparser's format).
fn parser_position(msg: &str) -> Option<(u64, u64)> {
    let i = msg.rfind("Line: ")?;
    let rest = &msg[i + 6..];
    let (l, rest) = rest.split_once(", Column: ")?;
    let c: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((l.trim().parse().ok()?, c.parse().ok()?))
}

/// The column an "unknown column" message names (`No field named txt. ...`, `No field named
/// posts.txt`, `No field named "Txt"`): its last part, as written in the query.
pub(crate) fn unknown_column(msg: &str) -> Option<&str> {
    let rest = &msg[msg.find("No field named ")? + "No field named ".len()..];
    let name = if let Some(q) = rest.strip_prefix('"') {
        &q[..q.find('"')?]
    } else {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].trim_end_matches('.')
    };
    let last = name.rsplit('.').next().unwrap_or(name);
    (!last.is_empty()).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::unknown_column;

    #[test]
    fn the_unknown_column_is_named() {
        assert_eq!(
            unknown_column("No field named txt. Did you mean 'posts.text'?"),
            Some("txt")
        );
        assert_eq!(unknown_column("No field named posts.txt."), Some("txt"));
        assert_eq!(unknown_column("No field named \"Txt\". Valid"), Some("Txt"));
        assert_eq!(unknown_column("No field named txt"), Some("txt"));
        assert_eq!(unknown_column("table 'x' not found"), None);
    }
}
