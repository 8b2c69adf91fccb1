//! Network addresses named in table options, parsed strictly: what a connector accepts here is
//! read the same way by the client library that connects (librdkafka, the S3 and WebSocket
//! clients), so a sandbox that checks the host checks the host that is reached. Anything
//! ambiguous (userinfo, backslashes, spaces, control characters) is refused.

use crate::{Error, Result};

/// A parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Scheme, lowercase (empty for `host:port`).
    pub scheme: String,
    /// Host name (lowercase) or IP address (IPv6 without brackets).
    pub host: String,
    pub port: Option<u16>,
}

fn bad(what: &str, value: &str, why: &str) -> Error {
    Error::plan(format!("{what} '{value}': {why}"))
}

/// Whether `s` is a DNS name (letters, digits, '-' and '.', labels of 1-63) or an IPv4 address.
fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `host:port`, `host`, `[v6]:port`: the form librdkafka and `redis://` hosts take.
pub fn parse_host_port(what: &str, s: &str) -> Result<Endpoint> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(what, s, "unclosed '['"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad(what, s, "not an IPv6 address in brackets"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad(what, s, "expected ':port' after ']'"))?,
            ),
        };
        (h.to_string(), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (s.to_ascii_lowercase(), None),
        }
    };
    if !host.contains(':') && !is_hostname(&host) {
        return Err(bad(
            what,
            s,
            "not a host name or IP address (letters, digits, '-' and '.' only)",
        ));
    }
    let port = match port {
        None => None,
        Some(p) => Some(
            Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(what, s, "the port must be a number from 1 to 65535"))?,
        ),
    };
    Ok(Endpoint {
        scheme: String::new(),
        host,
        port,
    })
}

/// A Kafka `bootstrap_servers` list: comma-separated `[protocol://]host:port`, as librdkafka
/// reads it. Every entry must be unambiguous (no userinfo, no paths, no spaces inside).
pub fn parse_kafka_brokers(s: &str) -> Result<Vec<Endpoint>> {
    const PROTOCOLS: &[&str] = &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
    let mut out = Vec::new();
    for entry in s.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let (scheme, hostport) = match entry.split_once("://") {
            Some((p, rest)) => {
                let p = p.to_ascii_lowercase();
                if !PROTOCOLS.contains(&p.as_str()) {
                    return Err(bad(
                        "bootstrap server",
                        entry,
                        "unknown protocol (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)",
                    ));
                }
                (p, rest)
            }
            None => (String::new(), entry),
        };
        let mut e = parse_host_port("bootstrap server", hostport)?;
        if e.port.is_none() {
            return Err(bad("bootstrap server", entry, "host:port expected"));
        }
        e.scheme = scheme;
        out.push(e);
    }
    if out.is_empty() {
        return Err(Error::plan("bootstrap_servers: no broker given"));
    }
    Ok(out)
}

/// A URL with one of `schemes`, a host and no userinfo, parsed by the `url` crate (which the
/// HTTP and WebSocket clients use).
pub fn parse_url(what: &str, s: &str, schemes: &[&str]) -> Result<Endpoint> {
    if s.chars()
        .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            what,
            s,
            "backslashes, spaces and control characters are not allowed",
        ));
    }
    let u = url::Url::parse(s).map_err(|e| bad(what, s, &e.to_string()))?;
    if !schemes.contains(&u.scheme()) {
        return Err(bad(
            what,
            s,
            &format!("the scheme must be one of {}", schemes.join(", ")),
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            what,
            s,
            "user names and passwords in the URL are not allowed (use the connector's options)",
        ));
    }
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(bad(what, s, "no host")),
    };
    Ok(Endpoint {
        scheme: u.scheme().to_string(),
        host,
        port: u.port(),
    })
}

/// An S3 bucket name: 3-63 lowercase letters, digits, '.' and '-', starting and ending with a
/// letter or digit.
pub fn check_bucket(bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && bucket
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(bad(
            "S3 bucket",
            bucket,
            "3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit",
        ))
    }
}

/// An S3 region name: lowercase letters, digits and '-' (`us-east-1`).
pub fn check_region(region: &str) -> Result<()> {
    let ok = (1..=32).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(bad(
            "S3 region",
            region,
            "lowercase letters, digits and '-' only (e.g. us-east-1)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_lists_are_parsed_like_librdkafka_or_refused() {
        let b = parse_kafka_brokers("127.0.0.1:9092, kafka-1:9093,SSL://[::1]:9094").unwrap();
        let hosts: Vec<(&str, Option<u16>)> = b.iter().map(|e| (e.host.as_str(), e.port)).collect();
        assert_eq!(
            hosts,
            [
                ("127.0.0.1", Some(9092)),
                ("kafka-1", Some(9093)),
                ("::1", Some(9094))
            ]
        );
        for bad in [
            "127.0.0.2:19092@127.0.0.1",
            "127.0.0.1",
            "a b:1",
            "h:99999",
            "h:+1",
            "http://h:1",
            "h/x:1",
            "",
        ] {
            assert!(parse_kafka_brokers(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_without_userinfo_or_backslashes() {
        let e = parse_url("s3_endpoint", "http://127.0.0.1:9000", &["http", "https"]).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", Some(9000)));
        for bad in [
            "http://x@127.0.0.2:9000",
            "http://127.0.0.1:9000\\@evil",
            "ftp://h",
            "http:// h",
            "not a url",
        ] {
            assert!(parse_url("e", bad, &["http", "https"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets_and_regions() {
        check_bucket("my-bucket.1").unwrap();
        for b in ["x@127.0.0.2:19000#", "ab", "Upper", "-x-"] {
            assert!(check_bucket(b).is_err(), "{b}");
        }
        check_region("us-east-1").unwrap();
        assert!(check_region("x@127.0.0.2:19000/").is_err());
    }
}
