//! The `WITH (key = 'value', ...)` options of a table, read by connectors into typed configs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Error, Result};

/// The largest `batch_size` a source accepts: a batch is held whole in memory (several in the
/// channel to the engine), outside the pipeline's memory accounting.
pub const MAX_BATCH_SIZE: usize = 65_536;

/// Options of one table. Connectors `take` the keys they understand and call
/// [`Options::finish`], which rejects every key left over by name.
#[derive(Debug, Clone, Default)]
pub struct Options {
    table: String,
    connector: String,
    values: BTreeMap<String, String>,
}

impl Options {
    pub fn new(table: impl Into<String>, values: BTreeMap<String, String>) -> Self {
        Self {
            table: table.into(),
            connector: String::new(),
            values,
        }
    }

    /// Sets the connector name used in error messages.
    pub fn for_connector(mut self, connector: &str) -> Self {
        self.connector = connector.to_string();
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    fn err(&self, msg: String) -> Error {
        Error::plan(format!(
            "table '{}' (connector '{}'): {msg}",
            self.table, self.connector
        ))
    }

    /// The option names not taken yet.
    pub fn keys(&self) -> impl Iterator<Item = String> + '_ {
        self.values.keys().cloned()
    }

    pub fn take(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// Takes every option named `{prefix}...`, keyed by the rest of its name.
    pub fn take_prefixed(&mut self, prefix: &str) -> BTreeMap<String, String> {
        let keys: Vec<String> = self.keys().filter(|k| k.starts_with(prefix)).collect();
        keys.into_iter()
            .filter_map(|k| {
                let v = self.take(&k)?;
                Some((k[prefix.len()..].to_string(), v))
            })
            .collect()
    }

    pub fn take_required(&mut self, key: &str) -> Result<String> {
        self.take(key)
            .ok_or_else(|| self.err(format!("missing required option '{key}'")))
    }

    pub fn take_parsed<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.err(format!("option '{key}': cannot parse '{v}'"))),
        }
    }

    /// A number in `range` (an error naming the option and the range otherwise).
    pub fn take_bounded<T>(
        &mut self,
        key: &str,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<Option<T>>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        match self.take_parsed::<T>(key)? {
            Some(v) if !range.contains(&v) => Err(self.err(format!(
                "option '{key}': {v} is out of range ({} to {})",
                range.start(),
                range.end()
            ))),
            v => Ok(v),
        }
    }

    /// `batch_size`: rows a source sends to the engine at once, 1 to [`MAX_BATCH_SIZE`].
    pub fn take_batch_size(&mut self, default: usize) -> Result<usize> {
        Ok(self
            .take_bounded("batch_size", 1..=MAX_BATCH_SIZE)?
            .unwrap_or(default))
    }

    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.take(key).map(|v| v.to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v == "true" || v == "1" || v == "yes" => Ok(Some(true)),
            Some(v) if v == "false" || v == "0" || v == "no" => Ok(Some(false)),
            Some(v) => Err(self.err(format!("option '{key}': expected true or false, got '{v}'"))),
        }
    }

    pub fn take_duration(&mut self, key: &str) -> Result<Option<Duration>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => crate::time::parse_duration(&v)
                .map(Some)
                .map_err(|e| self.err(format!("option '{key}': {e}"))),
        }
    }

    /// A value that must be one of `allowed`.
    pub fn take_choice(&mut self, key: &str, allowed: &[&str]) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(None),
            Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
            Some(v) => Err(self.err(format!(
                "option '{key}': '{v}' is not one of {}",
                allowed
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Fails naming every option no one took.
    pub fn finish(self) -> Result<()> {
        if self.values.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = self.values.keys().map(|k| format!("'{k}'")).collect();
        Err(self.err(format!(
            "unknown option{} {}",
            if keys.len() > 1 { "s" } else { "" },
            keys.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let mut o = Options::new(
            "t",
            [
                ("path".to_string(), "x".to_string()),
                ("pth".to_string(), "y".to_string()),
            ]
            .into(),
        )
        .for_connector("replay");
        assert_eq!(o.take_required("path").unwrap(), "x");
        let e = o.finish().unwrap_err().to_string();
        assert!(e.contains("unknown option 'pth'"), "{e}");
        assert!(e.contains("replay"), "{e}");
    }
}
