//! Parsing of durations written in options (`'5s'`, `'10 minutes'`, `'250ms'`).

use std::time::Duration;

use crate::{Error, Result};

const MAX_DURATION_SECS: f64 = 100.0 * 365.25 * 86_400.0;

/// Parses `"<number> <unit>"` where unit is ns, us, ms, s, m/min, h, d or their long names.
/// A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        Error::plan(format!(
            "invalid duration '{s}': expected e.g. '5s', '10 minutes'"
        ))
    })?;
    let unit = unit.trim().to_ascii_lowercase();
    let secs = match unit.as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => n,
        "ns" | "nanosecond" | "nanoseconds" => n / 1e9,
        "us" | "µs" | "microsecond" | "microseconds" => n / 1e6,
        "ms" | "millisecond" | "milliseconds" => n / 1e3,
        "m" | "min" | "mins" | "minute" | "minutes" => n * 60.0,
        "h" | "hr" | "hour" | "hours" => n * 3600.0,
        "d" | "day" | "days" => n * 86400.0,
        other => {
            return Err(Error::plan(format!(
                "invalid duration '{s}': unknown unit '{other}'"
            )));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(Error::plan(format!("invalid duration '{s}'")));
    }
    // Durations become nanoseconds in i64 (292 years); none needs more than a century.
    if secs > MAX_DURATION_SECS {
        return Err(Error::plan(format!(
            "invalid duration '{s}': at most 100 years"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// Formats nanoseconds since the epoch as an RFC 3339 UTC timestamp.
pub fn format_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    if nanos == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!(
            "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z",
            nanos / 1_000_000
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses an RFC 3339 timestamp (`2026-07-04T14:38:06.240Z`, offsets allowed) to nanoseconds.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as i64;
        }
        Some(v)
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let mut digits = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if digits < 9 {
                frac_ns = frac_ns * 10 + (b[i] - b'0') as i64;
                digits += 1;
            }
            i += 1;
        }
        for _ in digits..9 {
            frac_ns *= 10;
        }
    }
    let offset_s = match b.get(i) {
        Some(b'Z') | Some(b'z') => 0,
        Some(&c @ (b'+' | b'-')) if b.len() >= i + 6 => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let o = oh * 3600 + om * 60;
            if c == b'+' { o } else { -o }
        }
        None => 0,
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86400 + h * 3600 + mi * 60 + se - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(
            parse_duration("10 minutes").unwrap(),
            Duration::from_secs(600)
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("abc").is_err());
    }

    #[test]
    fn rfc3339_round_trip() {
        let ns = parse_rfc3339_ns("2026-07-04T14:38:06.240Z").unwrap();
        assert_eq!(format_ns(ns), "2026-07-04T14:38:06.240Z");
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ns("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339_ns("not a time"), None);
        assert_eq!(parse_rfc3339_ns("2026-13-04T14:38:06Z"), None);
    }
}
