//! `skystream demo`: trend detection on a synthetic firehose, needing no external service.
//!
//! The shipped `sql/trends.sql` runs unchanged, its source swapped for a synthetic stream with
//! planted bursts and its sinks for a live board. The stream's first 65 minutes of event time
//! (the query's first full baseline) are generated as fast as they are read, then it is paced,
//! so bursts rise to the top within seconds. On a terminal the board is redrawn in place;
//! piped, every window's trends are plain lines. `--counts` shows the naive ranking
//! (`sql/demo.sql`: most frequent keywords) for comparison.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType};
use futures::FutureExt;
use futures::future::BoxFuture;
use skystream_engine::metrics::PipelineMetrics;
use skystream_engine::sink::Sink;
use skystream_engine::time::{format_ns, now_ns};

use crate::shipped;

const MINUTE_NS: i64 = 60_000_000_000;
/// trends.sql's windows slide by one minute: a keyword alerted in consecutive windows is one
/// trend, whose age is counted from its first window.
const SLIDE_NS: i64 = MINUTE_NS;
/// trends.sql's whole window (the baseline hour and the recent 5 minutes): fast-forwarded.
const FAST_FORWARD: &str = "65m";
const FAST_FORWARD_NS: i64 = 65 * MINUTE_NS;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Posts per second of event time.
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// How much faster event time runs than the wall clock after the first 65 minutes (which
    /// go as fast as they are read); 'max' for no pacing at all.
    #[arg(long, default_value = "30")]
    speed: String,
    /// Event time to generate (e.g. 3h), the fast-forwarded 65 minutes included.
    #[arg(long, default_value = "4h")]
    duration: String,
    /// Random seed of the synthetic firehose.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Planted bursts: keyword:start:duration:intensity[:lang], comma-separated; `start` counts
    /// from the beginning of the stream (the baseline fills during the first 65 minutes).
    #[arg(
        long,
        default_value = "eclipse:66m:20m:10,地震:68m:15m:10:ja,flamengo:70m:15m:10:pt,aurora:100m:20m:8,花火:120m:15m:8:ja,carnaval:140m:20m:8:pt,ceasefire:170m:20m:10"
    )]
    bursts: String,
    /// Show the naive ranking (the most frequent keywords per window, sql/demo.sql) instead of
    /// trend detection.
    #[arg(long)]
    counts: bool,
    /// Print the pipeline script and exit.
    #[arg(long)]
    print_sql: bool,
}

/// The synthetic source's options: the stream starts 65 minutes before now, so that once the
/// baseline is filled the paced part begins at the wall clock.
fn source_options(a: &DemoArgs, start_ns: i64) -> BTreeMap<String, String> {
    [
        ("connector", "synthetic".to_string()),
        ("rate", a.rate.to_string()),
        ("speed", a.speed.clone()),
        ("duration", a.duration.clone()),
        ("seed", a.seed.to_string()),
        ("bursts", a.bursts.clone()),
        ("start", format_ns(start_ns)),
        ("fast_forward", FAST_FORWARD.to_string()),
        ("out_of_order", "1s".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// sql/trends.sql with its parameters at their defaults.
fn trends_sql() -> Result<String> {
    skystream_sql::params::substitute(shipped::TRENDS, &BTreeMap::new()).map_err(anyhow::Error::msg)
}

pub fn run(args: DemoArgs) -> Result<()> {
    let start_ns = now_ns() - FAST_FORWARD_NS;
    if args.counts {
        // demo.sql's placeholders are named as the source's options.
        let vars = source_options(&args, start_ns);
        let sql =
            skystream_sql::params::substitute(shipped::DEMO, &vars).map_err(anyhow::Error::msg)?;
        if args.print_sql {
            println!("{sql}");
            return Ok(());
        }
        eprintln!(
            "skystream demo --counts: the most frequent keywords per window (sql/demo.sql), not trends; Ctrl-C to stop"
        );
        return crate::run_script(
            &sql,
            crate::RunOptions {
                explain: false,
                progress: 5.0,
                idle_timeout: 5.0,
                memory_limit: None,
                max_event_ahead: None,
                tables: Default::default(),
                name: "demo".into(),
                checkpoint: None,
                checkpoint_interval: 10.0,
                threads: 1,
            },
        );
    }
    if args.print_sql {
        let sql = trends_sql()?;
        // The same run by hand: the script's tables replaced as the demo replaces them.
        let mut with: Vec<String> = source_options(&args, start_ns)
            .into_iter()
            .map(|(k, v)| format!("--with 'posts.{k}={v}'"))
            .collect();
        with.push(format!(
            "--with {}.connector=stdout",
            shipped::TREND_SINKS[0]
        ));
        with.extend(
            shipped::TREND_SINKS[1..]
                .iter()
                .map(|t| format!("--with {t}.connector=memory")),
        );
        println!(
            "-- skystream demo runs sql/trends.sql (below) with its tables replaced; by hand:\n--   skystream run trends {}\n{sql}",
            with.join(" ")
        );
        return Ok(());
    }
    let live = std::io::stdout().is_terminal();
    let out: Box<dyn Write + Send> = Box::new(std::io::stdout());
    let rt = crate::runtime()?;
    rt.block_on(run_board(&args, start_ns, live, out))
}

/// Runs trends.sql over the synthetic stream into a board written to `out` (redrawn in place
/// when `live`, else plain lines per window).
pub async fn run_board(
    args: &DemoArgs,
    start_ns: i64,
    live: bool,
    out: Box<dyn Write + Send>,
) -> Result<()> {
    let reg = skystream_registry::registry();
    let opts = skystream_sql::PlanOptions {
        tables: shipped::in_memory(source_options(args, start_ns), &shipped::TREND_SINKS),
        ..Default::default()
    };
    let planned = skystream_sql::plan_script_with(&trends_sql()?, &reg, &opts)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut pipeline = planned.pipeline;
    pipeline.config.name = "demo".into();
    pipeline.config.idle_timeout = Duration::from_secs(5);
    let metrics = pipeline.metrics();
    let board = Arc::new(Mutex::new(Board::new(
        live,
        out,
        start_ns,
        planted(&args.bursts, start_ns),
    )));
    // The three sinks get the same rows: one feeds the board, the others are not needed here.
    let stop = pipeline.stop_handle();
    for slot in &mut pipeline.sinks {
        slot.sink = if slot.name == shipped::TREND_SINKS[0] {
            Box::new(BoardSink {
                board: board.clone(),
                metrics: metrics.clone(),
                stop: stop.clone(),
            })
        } else {
            Box::new(Discard)
        };
    }
    if !pipeline
        .sinks
        .iter()
        .any(|s| s.name == shipped::TREND_SINKS[0])
    {
        bail!(
            "sql/trends.sql no longer writes {}",
            shipped::TREND_SINKS[0]
        );
    }
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.stop();
        }
    });
    // Live, the board's status line (event time, posts/s, the baseline filling) moves
    // between windows; piped output has none.
    let ticker = live.then(|| {
        let (board, metrics) = (board.clone(), metrics.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Err(e) = board.lock().unwrap().tick(&metrics) {
                    tracing::debug!("demo board: {e}");
                    return;
                }
            }
        })
    });
    let summary = pipeline.run().await;
    if let Some(t) = ticker {
        t.abort();
    }
    let mut b = board.lock().unwrap();
    if !b.closed {
        b.tick(&metrics).ok();
        b.finish(summary.as_ref().ok().map(|s| s.metrics.rows_in))
            .ok();
    }
    summary.context("the demo pipeline")?;
    Ok(())
}

/// A planted burst, for the board's footer.
struct Planted {
    keyword: String,
    lang: String,
    start_ns: i64,
}

fn planted(spec: &str, start_ns: i64) -> Vec<Planted> {
    spec.split(',')
        .filter_map(|s| skystream_synthetic::Burst::parse(s).ok())
        .map(|b| Planted {
            keyword: b.keyword,
            lang: b.lang,
            start_ns: start_ns + b.start_ns,
        })
        .collect()
}

/// One trend of a window.
#[derive(Debug, Clone, PartialEq)]
struct TrendRow {
    window_end_ns: i64,
    rank: i64,
    keyword: String,
    lang: String,
    authors: i64,
    score: f64,
    growth: f64,
    /// The end of the first window of its unbroken run of windows.
    since_ns: i64,
}

impl TrendRow {
    fn minutes(&self) -> i64 {
        (self.window_end_ns - self.since_ns) / MINUTE_NS + 1
    }
}

/// TrendAlert rows of `b`, without their run (`since_ns` is the window itself).
fn rows_of(b: &RecordBatch) -> Result<Vec<TrendRow>> {
    let col = |n: &str, t: &DataType| crate::column_as(b, n, t);
    let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
    let end = col("window_end", &ts)?;
    let end = end.as_primitive::<TimestampNanosecondType>();
    let (rank, authors) = (
        col("rank", &DataType::Int64)?,
        col("authors", &DataType::Int64)?,
    );
    let (rank, authors) = (
        rank.as_primitive::<Int64Type>(),
        authors.as_primitive::<Int64Type>(),
    );
    let (score, growth) = (
        col("score", &DataType::Float64)?,
        col("growth", &DataType::Float64)?,
    );
    let (score, growth) = (
        score.as_primitive::<Float64Type>(),
        growth.as_primitive::<Float64Type>(),
    );
    let (kw, lang) = (
        col("keyword", &DataType::Utf8)?,
        col("lang", &DataType::Utf8)?,
    );
    let (kw, lang) = (kw.as_string::<i32>(), lang.as_string::<i32>());
    Ok((0..b.num_rows())
        .filter(|&i| end.is_valid(i) && kw.is_valid(i))
        .map(|i| TrendRow {
            window_end_ns: end.value(i),
            rank: rank.value(i),
            keyword: kw.value(i).to_string(),
            lang: if lang.is_valid(i) { lang.value(i) } else { "" }.to_string(),
            authors: authors.value(i),
            score: score.value(i),
            growth: growth.value(i),
            since_ns: end.value(i),
        })
        .collect())
}

/// What the board shows: the newest window's trends, with how long each has trended.
struct Board {
    live: bool,
    out: Box<dyn Write + Send>,
    start_ns: i64,
    planted: Vec<Planted>,
    /// Per keyword: the first and the last window of its current run.
    runs: HashMap<String, (i64, i64)>,
    /// The newest window with trends.
    current: Vec<TrendRow>,
    /// Live: the alternate screen is in use.
    on_screen: bool,
    /// The output was closed (a pipe whose reader left): nothing more is written.
    closed: bool,
    /// Event time reached and posts read, with when they were read (for posts/s).
    watermark_ns: Option<i64>,
    posts: u64,
    rate: f64,
    last_tick: Option<(std::time::Instant, u64)>,
}

impl Board {
    fn new(live: bool, out: Box<dyn Write + Send>, start_ns: i64, planted: Vec<Planted>) -> Self {
        Self {
            live,
            out,
            start_ns,
            planted,
            runs: HashMap::new(),
            current: Vec::new(),
            on_screen: false,
            closed: false,
            watermark_ns: None,
            posts: 0,
            rate: 0.0,
            last_tick: None,
        }
    }

    /// Takes a batch of trend rows: runs extended, the newest window shown.
    fn add(&mut self, mut rows: Vec<TrendRow>) -> std::io::Result<()> {
        rows.sort_by_key(|r| (r.window_end_ns, r.rank));
        let mut windows: Vec<i64> = rows.iter().map(|r| r.window_end_ns).collect();
        windows.dedup();
        for w in windows {
            let mut shown: Vec<TrendRow> = rows
                .iter()
                .filter(|r| r.window_end_ns == w)
                .cloned()
                .collect();
            for r in &mut shown {
                let run = self.runs.entry(r.keyword.clone()).or_insert((w, w));
                // A window missed ends the run; the same window again (a replay) keeps it.
                if run.1 != w && run.1 != w - SLIDE_NS {
                    run.0 = w;
                }
                run.1 = w;
                r.since_ns = run.0;
            }
            if !self.live {
                self.print_window(&shown)?;
            }
            if self.current.first().is_none_or(|c| c.window_end_ns <= w) {
                self.current = shown;
            }
        }
        if self.live {
            self.draw()?;
        }
        Ok(())
    }

    /// Piped: one plain line per trend of a window.
    fn print_window(&mut self, rows: &[TrendRow]) -> std::io::Result<()> {
        for r in rows {
            writeln!(
                self.out,
                "{}  #{:<2} {} {:<4} score {:>6.1}  growth {:>5.1}x  authors {:>4}  trending {} min",
                hhmm(r.window_end_ns),
                r.rank,
                pad(&r.keyword, 14),
                r.lang,
                r.score,
                r.growth,
                r.authors,
                r.minutes()
            )?;
        }
        self.out.flush()
    }

    fn tick(&mut self, m: &PipelineMetrics) -> std::io::Result<()> {
        let s = m.snapshot();
        let now = std::time::Instant::now();
        if let Some((at, posts)) = self.last_tick {
            let dt = now.duration_since(at).as_secs_f64();
            if dt > 0.2 {
                self.rate = (s.rows_in.saturating_sub(posts)) as f64 / dt;
                self.last_tick = Some((now, s.rows_in));
            }
        } else {
            self.last_tick = Some((now, s.rows_in));
        }
        self.watermark_ns = s.watermark;
        self.posts = s.rows_in;
        if self.live && !self.closed {
            self.draw()
        } else {
            Ok(())
        }
    }

    /// The status line: event time, what the baseline holds, posts read.
    fn status(&self) -> String {
        let Some(wm) = self.watermark_ns else {
            return "starting...".into();
        };
        let filled = (wm - self.start_ns).clamp(0, FAST_FORWARD_NS) / MINUTE_NS;
        let phase = if filled < FAST_FORWARD_NS / MINUTE_NS {
            format!("filling the baseline: {filled} of 65 min (fast-forward)")
        } else {
            "baseline full, paced".to_string()
        };
        format!(
            "event time {} | {} | {} posts read ({:.0}/s)",
            hhmm(wm),
            phase,
            self.posts,
            self.rate
        )
    }

    fn lines(&self) -> Vec<String> {
        let mut l = vec![
            "skystream demo: what is trending (sql/trends.sql) on a synthetic firehose; Ctrl-C stops"
                .to_string(),
            self.status(),
            String::new(),
        ];
        match self.current.first() {
            None => l.push("nothing trending yet".into()),
            Some(first) => {
                let stale = self
                    .watermark_ns
                    .is_some_and(|wm| wm - first.window_end_ns > 2 * SLIDE_NS);
                l.push(format!(
                    "window ending {}{}",
                    hhmm(first.window_end_ns),
                    if stale {
                        " (nothing has trended since)"
                    } else {
                        ""
                    }
                ));
                l.push(format!(
                    " {:>2}  {:<14} {:<4} {:>6} {:>7} {:>7}  {}",
                    "#", "keyword", "lang", "score", "growth", "authors", "trending"
                ));
                for r in &self.current {
                    l.push(format!(
                        " {:>2}  {} {:<4} {:>6.1} {:>6.1}x {:>7}  {} min (since {})",
                        r.rank,
                        pad(&r.keyword, 14),
                        r.lang,
                        r.score,
                        r.growth,
                        r.authors,
                        r.minutes(),
                        hhmm(r.since_ns)
                    ));
                }
            }
        }
        l.push(String::new());
        let planted: Vec<String> = self
            .planted
            .iter()
            .map(|p| format!("{} ({}) {}", p.keyword, p.lang, hhmm(p.start_ns)))
            .collect();
        l.push(format!("planted bursts: {}", planted.join(", ")));
        l
    }

    /// Live: the board drawn over the last one, on the terminal's alternate screen (as `top`
    /// does: long lines may wrap without the redraw drifting, and the shell's screen comes
    /// back when the demo ends).
    fn draw(&mut self) -> std::io::Result<()> {
        let mut s = String::new();
        if !self.on_screen {
            s.push_str("\x1b[?1049h");
            self.on_screen = true;
        }
        // Home, then each line cleared to its end, then the rest of the screen.
        s.push_str("\x1b[H");
        for l in self.lines() {
            s.push_str(&l);
            s.push_str("\x1b[K\n");
        }
        s.push_str("\x1b[J");
        self.out.write_all(s.as_bytes())?;
        self.out.flush()
    }

    fn finish(&mut self, posts: Option<u64>) -> std::io::Result<()> {
        if self.on_screen {
            // Back to the shell's screen, with the last board left on it.
            self.out.write_all(b"\x1b[?1049l")?;
            self.on_screen = false;
            for l in self.lines() {
                writeln!(self.out, "{l}")?;
            }
        }
        if let Some(p) = posts {
            writeln!(self.out, "demo finished: {p} posts")?;
        }
        self.out.flush()
    }
}

/// `s` padded with spaces to `width` terminal columns (CJK characters take two).
fn pad(s: &str, width: usize) -> String {
    let w = unicode_width::UnicodeWidthStr::width(s);
    format!("{s}{}", " ".repeat(width.saturating_sub(w)))
}

/// HH:MM (UTC) of a time.
fn hhmm(ns: i64) -> String {
    format_ns(ns)[11..16].to_string()
}

struct BoardSink {
    board: Arc<Mutex<Board>>,
    metrics: Arc<PipelineMetrics>,
    stop: skystream_engine::pipeline::StopHandle,
}

impl Sink for BoardSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, skystream_engine::Result<()>> {
        let r = rows_of(&batch)
            .map_err(|e| skystream_engine::Error::connector("demo", e.to_string()))
            .and_then(|rows| {
                let mut b = self.board.lock().unwrap();
                b.tick(&self.metrics).ok();
                match b.add(rows) {
                    // `skystream demo | head`: the reader has gone, so the demo stops.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        b.closed = true;
                        self.stop.stop();
                        Ok(())
                    }
                    r => r.map_err(|e| skystream_engine::Error::connector("demo", e)),
                }
            });
        async move { r }.boxed()
    }
}

/// Takes rows and keeps nothing.
struct Discard;

impl Sink for Discard {
    fn write(&mut self, _: RecordBatch) -> BoxFuture<'_, skystream_engine::Result<()>> {
        async { Ok(()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn row(min: i64, rank: i64, kw: &str) -> TrendRow {
        TrendRow {
            window_end_ns: min * MINUTE_NS,
            rank,
            keyword: kw.into(),
            lang: "en".into(),
            authors: 10,
            score: 7.5,
            growth: 4.0,
            since_ns: min * MINUTE_NS,
        }
    }

    #[test]
    fn runs_of_consecutive_windows_give_a_trend_its_age() {
        let out = Shared::default();
        let mut b = Board::new(false, Box::new(out.clone()), 0, vec![]);
        b.add(vec![row(70, 1, "eclipse")]).unwrap();
        b.add(vec![row(71, 1, "eclipse"), row(71, 2, "aurora")])
            .unwrap();
        b.add(vec![row(72, 1, "eclipse")]).unwrap();
        // A window without it ends the run.
        b.add(vec![row(74, 1, "aurora")]).unwrap();
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("01:10  #1  eclipse"), "{text}");
        assert!(lines[3].ends_with("trending 3 min"), "{text}");
        assert!(lines[4].contains("aurora") && lines[4].ends_with("trending 1 min"));
        assert_eq!(
            b.current,
            vec![TrendRow {
                since_ns: 74 * MINUTE_NS,
                ..row(74, 1, "aurora")
            }]
        );
        assert!(!text.contains('\x1b'), "piped output has no escape codes");
    }

    #[test]
    fn a_live_board_draws_over_itself() {
        let out = Shared::default();
        let mut b = Board::new(true, Box::new(out.clone()), 0, vec![]);
        b.add(vec![row(70, 1, "eclipse")]).unwrap();
        let first = out.text();
        assert!(first.starts_with("\x1b[?1049h\x1b[H"), "{first:?}");
        b.add(vec![row(71, 1, "eclipse")]).unwrap();
        let second = out.text()[first.len()..].to_string();
        assert!(second.starts_with("\x1b[H"), "{second:?}");
        assert!(second.contains("eclipse") && second.contains("2 min (since 01:10)"));
        // At the end the shell's screen comes back, with the last board printed on it.
        b.finish(Some(10)).unwrap();
        let last = out.text()[first.len() + second.len()..].to_string();
        assert!(last.starts_with("\x1b[?1049l"), "{last:?}");
        assert!(last.contains("2 min (since 01:10)"), "{last:?}");
        assert!(last.ends_with("demo finished: 10 posts\n"), "{last:?}");
    }

    /// The demo's pipeline, unpaced: the planted bursts in three languages trend within a few
    /// slides of their start, and little else does.
    #[test]
    fn the_demo_finds_its_planted_bursts() {
        let args = DemoArgs {
            rate: 40.0,
            speed: "max".into(),
            duration: "95m".into(),
            seed: 42,
            bursts: "eclipse:66m:20m:10,地震:68m:15m:10:ja,flamengo:70m:15m:10:pt".into(),
            counts: false,
            print_sql: false,
        };
        let out = Shared::default();
        let start = 1_783_166_400_000_000_000; // 2026-07-04T12:00:00Z
        crate::runtime()
            .unwrap()
            .block_on(run_board(&args, start, false, Box::new(out.clone())))
            .unwrap();
        let text = out.text();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains('#')).collect();
        for (kw, at) in [
            ("eclipse", "13:06"),
            ("地震", "13:08"),
            ("flamengo", "13:10"),
        ] {
            let first = lines
                .iter()
                .find(|l| l.contains(&format!(" {kw} ")))
                .unwrap_or_else(|| panic!("{kw} never trended:\n{text}"));
            // Within 3 slides of the burst's start.
            let t = &first[..5];
            assert!(t > at && t <= &plus_minutes(at, 3)[..], "{kw}: {first}");
        }
        let others = lines
            .iter()
            .filter(|l| {
                !["eclipse", "地震", "flamengo"]
                    .iter()
                    .any(|k| l.contains(&format!(" {k} ")))
            })
            .count();
        assert!(others <= 2, "{others} other trends:\n{text}");
        assert!(text.contains("demo finished"), "{text}");
    }

    fn plus_minutes(hhmm: &str, m: u32) -> String {
        let h: u32 = hhmm[..2].parse().unwrap();
        let mm: u32 = hhmm[3..].parse().unwrap();
        let t = h * 60 + mm + m;
        format!("{:02}:{:02}", t / 60, t % 60)
    }
}
