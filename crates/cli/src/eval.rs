//! `skystream eval`: how well `sql/trends.sql` finds what is trending, measured on synthetic
//! streams whose planted bursts are the ground truth, beside the naive ranking of
//! `sql/top_counts.sql` (most frequent keywords) on the same streams.
//!
//! Two streams of `--hours` event time each: one with planted bursts (several languages,
//! intensities and durations, and one account spamming a word), one stationary (no burst).
//! Windows are counted from the end of the first full baseline (65 minutes) on.
//!
//! * An alert (a row of the top 10 of a window ending at `e`) is **true** when a planted,
//!   non-spam burst of its keyword is on during the window: `start < e <= end + 5 min` (the
//!   recent window still holds the burst for 5 minutes after it ends).
//! * **precision@10**: the mean, over windows with at least one alert, of true alerts / alerts.
//! * **recall**: planted bursts of at least 3x their baseline lasting at least 5 minutes that
//!   get a true alert.
//! * **detection delay**: from a burst's start to the end of the first window alerting it, in
//!   slides (1 minute); the median over detected bursts.
//! * **false alarms per hour**: episodes (runs of consecutive windows) of false alerts of one
//!   keyword, per hour evaluated, on the stationary stream.
//! * **cold-start false alarms per hour**: the same over the first 65 minutes of both streams
//!   (no burst is planted there), while the query's baseline is still filling: what anyone
//!   starting the pipeline on an empty history sees.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit};
use skystream_synthetic::{Burst, Generator, GeneratorConfig};

use crate::shipped;

const MINUTE_NS: i64 = 60_000_000_000;
/// Width of the trend query's recent window and of its whole (recent + baseline) window.
const RECENT_NS: i64 = 5 * MINUTE_NS;
const WARMUP_NS: i64 = 65 * MINUTE_NS;
/// 2026-07-04T12:00:00Z: windows align with whole minutes.
const START_NS: i64 = 1_783_166_400_000_000_000;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Hours of event time of each stream (the first 65 minutes are baseline only).
    #[arg(long, default_value_t = 6.0)]
    hours: f64,
    /// Posts per second of event time.
    #[arg(long, default_value_t = 30.0)]
    rate: f64,
    /// Seed of both streams.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The trend query to measure, in place of the shipped sql/trends.sql (it must declare the
    /// same tables: `posts` and the three trend_alerts sinks).
    #[arg(long, value_name = "FILE")]
    query: Option<std::path::PathBuf>,
    /// A parameter of the trend query: --set min_score=4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Exit with an error when a goal is missed (recall >= 0.9, precision@10 >= 0.8, median
    /// delay <= 2 slides, <= 1 false alarm per hour, also in the first 65 minutes of a cold
    /// stream, the spammed word never alerted).
    #[arg(long)]
    check: bool,
}

/// One row of a ranking: a keyword in the top 10 of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub keyword: String,
    pub window_end_ns: i64,
}

/// What a ranking achieved on one stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quality {
    /// Windows evaluated, and those with at least one alert.
    pub windows: usize,
    pub windows_alerting: usize,
    pub precision_at_10: f64,
    /// Eligible bursts (>= 3x, >= 5 min, not spam) and those alerted.
    pub eligible: usize,
    pub detected: usize,
    /// Median detection delay of the detected bursts, in slides.
    pub median_delay: Option<f64>,
    /// Episodes of false alerts, and per hour evaluated.
    pub false_episodes: usize,
    pub false_per_hour: f64,
    /// Windows in which a spammed keyword (one account's burst) was alerted.
    pub spam_windows: usize,
    /// Per planted burst: its delay in slides, if detected.
    pub delays: Vec<Option<f64>>,
}

impl Quality {
    pub fn recall(&self) -> f64 {
        if self.eligible == 0 {
            return f64::NAN;
        }
        self.detected as f64 / self.eligible as f64
    }
}

/// Scores `alerts` against `planted` over the windows ending in `(from_ns, to_ns]`.
pub fn score(alerts: &[Alert], planted: &[Burst], from_ns: i64, to_ns: i64) -> Quality {
    let alerts: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.window_end_ns > from_ns && a.window_end_ns <= to_ns)
        .collect();
    let abs = |b: &Burst| (START_NS + b.start_ns, START_NS + b.start_ns + b.duration_ns);
    let on = |b: &Burst, end: i64| {
        let (s, e) = abs(b);
        s < end && end <= e + RECENT_NS
    };
    let is_true = |a: &Alert| {
        planted
            .iter()
            .any(|b| b.authors.is_none() && b.keyword == a.keyword && on(b, a.window_end_ns))
    };
    let mut by_window: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
    for a in &alerts {
        let e = by_window.entry(a.window_end_ns).or_default();
        e.0 += 1;
        e.1 += usize::from(is_true(a));
    }
    let windows = ((to_ns - from_ns) / MINUTE_NS).max(0) as usize;
    let precision = if by_window.is_empty() {
        f64::NAN
    } else {
        by_window
            .values()
            .map(|&(n, t)| t as f64 / n as f64)
            .sum::<f64>()
            / by_window.len() as f64
    };
    let mut delays = Vec::new();
    let (mut eligible, mut detected) = (0, 0);
    let mut found: Vec<f64> = Vec::new();
    for b in planted {
        let first = alerts
            .iter()
            .filter(|a| a.keyword == b.keyword && on(b, a.window_end_ns))
            .map(|a| a.window_end_ns)
            .min();
        let delay = first.map(|e| (e - abs(b).0) as f64 / MINUTE_NS as f64);
        delays.push(if b.authors.is_none() { delay } else { None });
        if b.authors.is_some()
            || b.intensity < 3.0
            || b.duration_ns < 5 * MINUTE_NS
            || abs(b).0 <= from_ns
        {
            continue;
        }
        eligible += 1;
        if let Some(d) = delay {
            detected += 1;
            found.push(d);
        }
    }
    found.sort_by(f64::total_cmp);
    let median_delay = (!found.is_empty()).then(|| {
        let n = found.len();
        if n % 2 == 1 {
            found[n / 2]
        } else {
            (found[n / 2 - 1] + found[n / 2]) / 2.0
        }
    });
    // False alerts, grouped into runs of consecutive windows per keyword.
    let mut false_by_kw: HashMap<&str, Vec<i64>> = HashMap::new();
    for a in &alerts {
        if !is_true(a) {
            false_by_kw
                .entry(a.keyword.as_str())
                .or_default()
                .push(a.window_end_ns);
        }
    }
    let mut false_episodes = 0;
    for ends in false_by_kw.values_mut() {
        ends.sort_unstable();
        ends.dedup();
        false_episodes += 1 + ends.windows(2).filter(|w| w[1] - w[0] > MINUTE_NS).count();
    }
    let spam_windows = alerts
        .iter()
        .filter(|a| {
            planted
                .iter()
                .any(|b| b.authors.is_some() && b.keyword == a.keyword && on(b, a.window_end_ns))
        })
        .map(|a| a.window_end_ns)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let hours = (to_ns - from_ns) as f64 / 3.6e12;
    Quality {
        windows,
        windows_alerting: by_window.len(),
        precision_at_10: precision,
        eligible,
        detected,
        median_delay,
        false_episodes,
        false_per_hour: false_episodes as f64 / hours,
        spam_windows,
        delays,
    }
}

/// The planted bursts of a stream of `hours`: one every 20 minutes from 70 minutes on, cycling
/// through languages, intensities (3x to 10x) and durations (5 to 20 minutes), and one account
/// spamming a word.
pub fn planted_bursts(hours: f64) -> Vec<Burst> {
    const KINDS: &[(&str, &str, f64, u32)] = &[
        ("eclipse", "en", 3.0, 10),
        ("地震", "ja", 6.0, 15),
        ("flamengo", "pt", 8.0, 10),
        ("tornado", "en", 4.0, 5),
        ("ceasefire", "en", 10.0, 20),
        ("台風", "ja", 4.0, 10),
        ("superbowl", "en", 6.0, 8),
        ("carnaval", "pt", 5.0, 12),
        ("blackout", "en", 3.0, 15),
        ("オーロラ", "ja", 8.0, 6),
        ("heatwave", "en", 5.0, 5),
        ("eleição", "pt", 10.0, 15),
    ];
    let end_min = (hours * 60.0) as u32;
    let mut out = Vec::new();
    let mut t = 70;
    let mut i = 0;
    while t + 25 <= end_min {
        let (kw, lang, intensity, dur) = KINDS[i % KINDS.len()];
        // Past the first round of keywords, each burst takes a keyword of its own.
        let kw = if i < KINDS.len() {
            kw.to_string()
        } else {
            format!("{kw}{}", i / KINDS.len() + 1)
        };
        out.push(
            Burst::parse(&format!("{kw}:{t}m:{dur}m:{intensity}:{lang}")).expect("a valid burst"),
        );
        t += 20;
        i += 1;
    }
    // One account posting a word 20x as often as it appears otherwise: not a trend.
    if end_min >= 100 {
        out.push(Burst::parse("spamcoin:80m:15m:20:en:1").expect("a valid burst"));
    }
    out
}

/// The ranking rows of memory table `table`: keyword, window end, rank <= 10.
fn alerts_of(
    reg: &skystream_engine::connector::ConnectorRegistry,
    table: &str,
) -> Result<(Vec<Alert>, Option<arrow::datatypes::SchemaRef>)> {
    let (_, batches) = reg
        .memory()
        .batches(table)
        .with_context(|| format!("no results in '{table}'"))?;
    let mut out = Vec::new();
    for b in &batches {
        out.extend(alert_rows(b)?);
    }
    Ok((out, batches.first().map(|b| b.schema())))
}

fn alert_rows(b: &RecordBatch) -> Result<Vec<Alert>> {
    let col = |n: &str, t: &DataType| crate::column_as(b, n, t);
    let kw = col("keyword", &DataType::Utf8)?;
    let kw = kw.as_string::<i32>();
    let end = col(
        "window_end",
        &DataType::Timestamp(TimeUnit::Nanosecond, None),
    )?;
    let end = end.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
    let rank = col("rank", &DataType::UInt64)?;
    let rank = rank.as_primitive::<arrow::datatypes::UInt64Type>();
    Ok((0..b.num_rows())
        .filter(|&i| kw.is_valid(i) && end.is_valid(i) && rank.value(i) <= 10)
        .map(|i| Alert {
            keyword: kw.value(i).to_string(),
            window_end_ns: end.value(i),
        })
        .collect())
}

/// What one run of a ranking query produced.
struct Ranking {
    alerts: Vec<Alert>,
    /// The schema of the rows written to the first sink.
    schema: Option<arrow::datatypes::SchemaRef>,
    posts: u64,
    secs: f64,
}

/// Runs `sql` with `posts` read from a synthetic stream and `sinks` written to memory; returns
/// the ranking rows of `sinks[0]`, the posts read and the seconds it took.
async fn run_ranking(
    sql: &str,
    sinks: &[&str],
    source: BTreeMap<String, String>,
) -> Result<Ranking> {
    let reg = skystream_registry::registry();
    let opts = skystream_sql::PlanOptions {
        tables: shipped::in_memory(source, sinks),
        ..Default::default()
    };
    let planned = skystream_sql::plan_script_with(sql, &reg, &opts)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    let s = planned.pipeline.run().await?;
    let secs = started.elapsed().as_secs_f64();
    let (alerts, schema) = alerts_of(&reg, sinks[0])?;
    Ok(Ranking {
        alerts,
        schema,
        posts: s.metrics.rows_in,
        secs,
    })
}

fn source(args: &EvalArgs, bursts: &[Burst]) -> BTreeMap<String, String> {
    let spec = |b: &Burst| {
        let mut s = format!(
            "{}:{}s:{}s:{}:{}",
            b.keyword,
            b.start_ns / 1_000_000_000,
            b.duration_ns / 1_000_000_000,
            b.intensity,
            b.lang
        );
        if let Some(a) = b.authors {
            s.push_str(&format!(":{a}"));
        }
        s
    };
    [
        ("connector", "synthetic".to_string()),
        ("seed", args.seed.to_string()),
        ("rate", args.rate.to_string()),
        ("duration", format!("{}s", (args.hours * 3600.0) as u64)),
        ("start", "2026-07-04T12:00:00Z".to_string()),
        ("speed", "max".to_string()),
        ("out_of_order", "2s".to_string()),
        (
            "bursts",
            bursts.iter().map(spec).collect::<Vec<_>>().join(","),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Whether `schema` has the columns of [`skystream_model::TrendAlert`] (names and types).
fn is_trend_alert(schema: &arrow::datatypes::Schema) -> bool {
    let want = skystream_model::trend_alert_schema();
    schema.fields().len() == want.fields().len()
        && schema
            .fields()
            .iter()
            .zip(want.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type())
}

/// One ranking's quality on both streams.
pub struct Side {
    pub bursty: Quality,
    pub stationary: Quality,
    /// The first baseline period of both streams (no bursts planted): false alarm episodes and
    /// the hours they are counted over.
    pub cold_false_episodes: usize,
    pub cold_hours: f64,
    pub posts_per_s: f64,
    /// The schema of its rows on the stream with bursts.
    pub schema: Option<arrow::datatypes::SchemaRef>,
}

impl Side {
    pub fn cold_false_per_hour(&self) -> f64 {
        self.cold_false_episodes as f64 / self.cold_hours
    }
}

/// The trend query and the naive ranking, measured on the same streams.
pub struct Report {
    pub bursts: Vec<Burst>,
    pub trends: Side,
    pub naive: Side,
}

fn fmt(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{x:.digits$}")
    }
}

/// Runs both rankings over both streams.
pub fn evaluate(args: &EvalArgs) -> Result<Report> {
    if !(args.hours >= 1.5 && args.hours.is_finite()) {
        bail!("--hours must be at least 1.5 (65 minutes of baseline, then bursts)");
    }
    let params = skystream_sql::params::parse_sets(&args.sets).map_err(anyhow::Error::msg)?;
    let text = match &args.query {
        Some(f) => crate::script_text(f)?,
        None => shipped::TRENDS.to_string(),
    };
    let trends = skystream_sql::params::substitute(&text, &params).map_err(anyhow::Error::msg)?;
    let top = skystream_sql::params::substitute(shipped::TOP_COUNTS, &BTreeMap::new())
        .map_err(anyhow::Error::msg)?;
    let bursts = planted_bursts(args.hours);
    let from = START_NS + WARMUP_NS;
    let to = START_NS + (args.hours * 3.6e12) as i64;
    let rt = crate::runtime()?;
    let mut sides = Vec::new();
    for (name, sql, sinks) in [
        ("sql/trends.sql", trends.as_str(), &shipped::TREND_SINKS[..]),
        ("naive top counts", top.as_str(), &["top_counts"][..]),
    ] {
        eprintln!("eval: {name} over {} h with planted bursts...", args.hours);
        let r = rt.block_on(run_ranking(sql, sinks, source(args, &bursts)))?;
        let bursty = score(&r.alerts, &bursts, from, to);
        eprintln!(
            "eval: {name} over {} h of a stationary stream...",
            args.hours
        );
        let quiet = rt.block_on(run_ranking(sql, sinks, source(args, &[])))?;
        let stationary = score(&quiet.alerts, &[], from, to);
        let cold = [&r.alerts, &quiet.alerts].map(|a| score(a, &bursts, START_NS, from));
        sides.push(Side {
            bursty,
            stationary,
            cold_false_episodes: cold.iter().map(|q| q.false_episodes).sum(),
            cold_hours: 2.0 * WARMUP_NS as f64 / 3.6e12,
            posts_per_s: r.posts as f64 / r.secs,
            schema: r.schema,
        });
    }
    let naive = sides.pop().expect("two sides");
    let trends = sides.pop().expect("two sides");
    Ok(Report {
        bursts,
        trends,
        naive,
    })
}

impl Report {
    /// The goals the trend query missed (empty: all met).
    pub fn missed(&self) -> Vec<&'static str> {
        let t = &self.trends;
        [
            (t.bursty.recall() >= 0.9, "recall"),
            (t.bursty.precision_at_10 >= 0.8, "precision@10"),
            (t.bursty.median_delay.is_some_and(|d| d <= 2.0), "delay"),
            (t.stationary.false_per_hour <= 1.0, "false alarms"),
            (t.cold_false_per_hour() <= 1.0, "cold-start false alarms"),
            (t.bursty.spam_windows == 0, "spam"),
            (
                t.schema.as_deref().is_some_and(is_trend_alert),
                "TrendAlert rows",
            ),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, n)| n)
        .collect()
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    let report = evaluate(&args)?;
    let truth = Generator::new(GeneratorConfig {
        seed: args.seed,
        rate: args.rate,
        start_ns: START_NS,
        bursts: report.bursts.clone(),
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?
    .ground_truth();
    let bursts = &report.bursts;
    let (t, n) = (&report.trends, &report.naive);
    println!(
        "skystream eval: {} h per stream at {} posts/s (seed {}), windows of 1 min from minute 65 on",
        args.hours, args.rate, args.seed
    );
    println!("planted bursts:");
    for (i, (b, g)) in bursts.iter().zip(&truth).enumerate() {
        let who = match b.authors {
            Some(a) => format!(" (spam: {a} account)"),
            None => String::new(),
        };
        let d = |q: &Quality| match q.delays[i] {
            Some(d) if b.authors.is_none() => format!("after {d:.0} min"),
            _ if b.authors.is_some() => "-".to_string(),
            _ => "missed".to_string(),
        };
        println!(
            "  {:<12} {:<3} {:>5.1}x for {:>2} min from {} ({:.1} -> {:.1} posts/min){who}: trends {}, naive {}",
            b.keyword,
            b.lang,
            b.intensity,
            b.duration_ns / MINUTE_NS,
            &g.start[11..16],
            g.baseline_per_min,
            g.burst_per_min,
            d(&t.bursty),
            d(&n.bursty),
        );
    }
    let row = |label: &str, a: String, b: String, goal: &str| {
        println!("  {label:<34} {a:>16} {b:>18}   {goal}");
    };
    println!();
    row(
        "",
        "sql/trends.sql".into(),
        "naive top counts".into(),
        "goal",
    );
    row(
        "precision@10 (windows alerting)",
        format!(
            "{} ({})",
            fmt(t.bursty.precision_at_10, 2),
            t.bursty.windows_alerting
        ),
        format!(
            "{} ({})",
            fmt(n.bursty.precision_at_10, 2),
            n.bursty.windows_alerting
        ),
        ">= 0.8",
    );
    row(
        "recall (>= 3x, >= 5 min)",
        format!(
            "{} ({}/{})",
            fmt(t.bursty.recall(), 2),
            t.bursty.detected,
            t.bursty.eligible
        ),
        format!(
            "{} ({}/{})",
            fmt(n.bursty.recall(), 2),
            n.bursty.detected,
            n.bursty.eligible
        ),
        ">= 0.9",
    );
    let delay = |q: &Quality| {
        q.median_delay
            .map(|d| format!("{d:.1} slides"))
            .unwrap_or_else(|| "-".into())
    };
    row(
        "median detection delay",
        delay(&t.bursty),
        delay(&n.bursty),
        "<= 2 slides",
    );
    row(
        "false alarms / hour (stationary)",
        format!(
            "{} ({})",
            fmt(t.stationary.false_per_hour, 2),
            t.stationary.false_episodes
        ),
        format!(
            "{} ({})",
            fmt(n.stationary.false_per_hour, 2),
            n.stationary.false_episodes
        ),
        "<= 1",
    );
    row(
        "false alarms / hour, first 65 min",
        format!(
            "{} ({})",
            fmt(t.cold_false_per_hour(), 2),
            t.cold_false_episodes
        ),
        format!(
            "{} ({})",
            fmt(n.cold_false_per_hour(), 2),
            n.cold_false_episodes
        ),
        "<= 1",
    );
    row(
        "false alarms / hour (with bursts)",
        fmt(t.bursty.false_per_hour, 2),
        fmt(n.bursty.false_per_hour, 2),
        "",
    );
    row(
        "windows alerting the spammed word",
        t.bursty.spam_windows.to_string(),
        n.bursty.spam_windows.to_string(),
        "0",
    );
    row(
        "throughput (posts/s, one run)",
        format!("{:.0}", t.posts_per_s),
        format!("{:.0}", n.posts_per_s),
        "",
    );
    let missed = report.missed();
    if missed.is_empty() {
        println!("\nevery goal met");
    } else {
        println!("\ngoals missed: {}", missed.join(", "));
        if args.check {
            bail!("goals missed: {}", missed.join(", "));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(k: &str, minute: i64) -> Alert {
        Alert {
            keyword: k.into(),
            window_end_ns: START_NS + minute * MINUTE_NS,
        }
    }

    #[test]
    fn alerts_are_scored_against_the_planted_bursts() {
        let planted = vec![
            Burst::parse("eclipse:70m:10m:3").unwrap(),
            Burst::parse("tornado:100m:5m:4").unwrap(),
            Burst::parse("faint:120m:10m:2").unwrap(),
            Burst::parse("spamcoin:80m:15m:20:en:1").unwrap(),
        ];
        let alerts = vec![
            // eclipse from minute 72 (delay 2) to 85 (70 + 10 + 5: still true).
            alert("eclipse", 72),
            alert("eclipse", 73),
            alert("eclipse", 85),
            // After its recent window left the burst: false.
            alert("eclipse", 86),
            // Two false episodes of "lol" (71-72, then 90).
            alert("lol", 71),
            alert("lol", 72),
            alert("lol", 90),
            // The spammed word alerted in one window (false, and counted as spam).
            alert("spamcoin", 82),
            // Before the evaluated range: ignored.
            alert("lol", 60),
        ];
        let q = score(
            &alerts,
            &planted,
            START_NS + 65 * MINUTE_NS,
            START_NS + 180 * MINUTE_NS,
        );
        assert_eq!(q.windows, 115);
        // Windows 71: lol (0/1); 72: eclipse, lol (1/2); 73: 1/1; 82: 0/1; 85: 1/1; 86: 0/1;
        // 90: 0/1.
        assert_eq!(q.windows_alerting, 7);
        assert!((q.precision_at_10 - 2.5 / 7.0).abs() < 1e-9, "{q:?}");
        // tornado missed; "faint" (2x) is not eligible; spam is not eligible.
        assert_eq!((q.eligible, q.detected), (2, 1));
        assert_eq!(q.median_delay, Some(2.0));
        assert_eq!(q.delays, vec![Some(2.0), None, None, None]);
        // False episodes: eclipse@86, lol 71-72, lol@90, spamcoin@82.
        assert_eq!(q.false_episodes, 4);
        assert!((q.false_per_hour - 4.0 / (115.0 / 60.0)).abs() < 1e-9);
        assert_eq!(q.spam_windows, 1);
    }

    /// The shipped trend query, run as `skystream eval --hours 2.5` runs it: bursts in English
    /// (3x), Japanese (6x) and Portuguese (8x) and one spamming account. Deterministic (seeded
    /// generator, event time): the numbers it checks are the query's quality, not its speed.
    #[test]
    fn the_trend_query_finds_planted_bursts_and_ignores_spam_and_noise() {
        let args = EvalArgs {
            hours: 2.5,
            rate: 30.0,
            seed: 7,
            query: None,
            sets: vec![],
            check: false,
        };
        let r = evaluate(&args).unwrap();
        let t = &r.trends;
        let kws: Vec<&str> = r.bursts.iter().map(|b| b.keyword.as_str()).collect();
        assert_eq!(kws, ["eclipse", "地震", "flamengo", "spamcoin"]);
        assert_eq!(
            (t.bursty.eligible, t.bursty.detected),
            (3, 3),
            "{:?}",
            t.bursty
        );
        assert!(
            r.missed().is_empty(),
            "{:?}: {:?} {:?}",
            r.missed(),
            t.bursty,
            t.stationary
        );
        // The naive ranking is dominated by frequent words.
        assert!(r.naive.bursty.precision_at_10 < 0.5, "{:?}", r.naive.bursty);
        assert!(
            r.naive.stationary.false_per_hour > 1.0,
            "{:?}",
            r.naive.stationary
        );
        // Its rows are TrendAlert rows (a goal above); the naive ranking's are not.
        assert!(!r.naive.schema.as_deref().is_some_and(is_trend_alert));
    }

    #[test]
    fn the_schedule_covers_languages_and_a_spammer() {
        let b = planted_bursts(6.0);
        assert!(b.len() >= 12, "{}", b.len());
        let langs: std::collections::BTreeSet<&str> = b.iter().map(|b| b.lang.as_str()).collect();
        assert!(langs.contains("ja") && langs.contains("pt") && langs.contains("en"));
        assert_eq!(b.iter().filter(|b| b.authors == Some(1)).count(), 1);
        // Every burst starts after the first full baseline and ends before the stream does.
        assert!(
            b.iter().all(
                |b| b.start_ns >= WARMUP_NS && b.start_ns + b.duration_ns <= 6 * 60 * MINUTE_NS
            )
        );
    }
}
