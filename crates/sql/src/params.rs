//! `${name}` and `${name:default}` placeholders in pipeline scripts, filled from parameters
//! (`skystream run --set name=value`, `params` of the HTTP API).

use std::collections::BTreeMap;

/// Replaces every placeholder; a placeholder without a value or default is an error.
pub fn substitute(sql: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated '${' in the script".into());
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(':') {
            Some((n, d)) => (n.trim(), Some(d)),
            None => (inner.trim(), None),
        };
        match vars.get(name).map(String::as_str).or(default) {
            Some(v) => out.push_str(v),
            None => {
                return Err(format!(
                    "the script uses ${{{name}}}, which has no default: give it a value (skystream run --set {name}=VALUE, or \"params\": {{\"{name}\": ...}} over HTTP)"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses `key=value` pairs (`--set`).
pub fn parse_sets(sets: &[String]) -> Result<BTreeMap<String, String>, String> {
    sets.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .ok_or_else(|| format!("--set takes key=value, got '{s}'"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let vars = parse_sets(&["rate=100".into()]).unwrap();
        assert_eq!(
            substitute("r='${rate:5}' s='${speed:max}'", &vars).unwrap(),
            "r='100' s='max'"
        );
        assert!(substitute("${missing}", &vars).is_err());
        assert!(substitute("${open", &vars).is_err());
        assert!(parse_sets(&["novalue".into()]).is_err());
    }
}
