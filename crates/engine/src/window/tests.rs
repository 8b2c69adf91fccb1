//! The slice operator against a brute-force evaluation of each window over the same rows:
//! every kind, invertible, distinct and merged aggregates, disorder within the watermark,
//! fused windows, and a snapshot → restore in the middle of the stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampNanosecondType,
};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;

const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;

/// Enough of a window function to plan with.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TestWindowFn(&'static str, Signature);

impl ScalarUDFImpl for TestWindowFn {
    fn name(&self) -> &str {
        self.0
    }
    fn signature(&self) -> &Signature {
        &self.1
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(window_type())
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> datafusion::common::Result<ColumnarValue> {
        datafusion::common::exec_err!("not evaluated")
    }
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Utf8, true),
        Field::new("x", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
    ]))
}

/// The operator of `SELECT k, <aggs>, <window> AS w FROM t GROUP BY k, w`.
async fn operator(window: &str) -> WindowAggregate {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    for k in KINDS {
        ctx.register_udf(ScalarUDF::from(TestWindowFn(
            k.name,
            Signature::variadic_any(Volatility::Volatile),
        )));
    }
    let t = MemTable::try_new(schema(), vec![vec![]]).unwrap();
    ctx.register_table("t", Arc::new(t)).unwrap();
    let sql = format!(
        "SELECT k, count(*) AS n, count(x) AS nx, count(DISTINCT v) AS d, sum(x) AS s, min(x) AS lo, \
         bit_xor(x) AS xr, avg(x) AS av, {window} AS w FROM t GROUP BY k, w"
    );
    let plan = ctx
        .sql(&sql)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    fn find(p: &Arc<dyn ExecutionPlan>) -> Option<&AggregateExec> {
        p.downcast_ref::<AggregateExec>()
            .or_else(|| p.children().into_iter().find_map(find))
    }
    WindowAggregate::try_new(find(&plan).expect("an aggregate")).unwrap()
}

#[derive(Clone)]
struct Row {
    k: String,
    v: Option<String>,
    x: Option<i64>,
    ts: i64,
}

/// 40 minutes of rows, disordered by up to 8 s, a few NULLs.
fn rows(seed: u64) -> Vec<Row> {
    let mut s = seed;
    let mut next = move |m: u64| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) % m
    };
    let mut out = Vec::new();
    let mut t = 0i64;
    while t < 40 * M {
        t += (next(3000) as i64 + 1) * 1_000_000;
        out.push(Row {
            k: format!("k{}", next(6)),
            v: (next(9) != 0).then(|| format!("v{}", next(8))),
            x: (next(7) != 0).then(|| next(100) as i64 - 20),
            ts: (t - next(8000) as i64 * 1_000_000).max(0),
        });
    }
    out
}

fn batch(rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.k.clone()),
            )),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.v.clone()))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.x))),
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.iter().map(|r| r.ts),
            )),
        ],
    )
    .unwrap()
}

/// What the test query computes of a window's rows: n, nx, distinct, sum, min (running totals,
/// last-seen pairs, a monotonic deque) and bit_xor, avg (two-stacks of DataFusion's states).
type Aggs = (
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
);

/// (end, key) -> aggregates, as the operator emitted (its columns: the group columns `k`, `w`,
/// then the aggregates).
type Results = BTreeMap<(i64, String), Aggs>;

fn collect(out: Vec<(i64, usize, RecordBatch)>, want: usize, into: &mut Results) {
    collect_rows(out, want, into, true)
}

/// Rows by the end each names; with `one_end`, every row of a batch has the batch's end.
fn collect_rows(
    out: Vec<(i64, usize, RecordBatch)>,
    want: usize,
    into: &mut Results,
    one_end: bool,
) {
    for (batch_end, o, b) in out {
        if o != want {
            continue;
        }
        let k = b.column(0).as_string::<i32>();
        let w = b.column(1).as_struct();
        let e = w.column(1).as_primitive::<TimestampNanosecondType>();
        let int = |c: usize, i: usize| {
            let a = b.column(c).as_primitive::<Int64Type>();
            a.is_valid(i).then(|| a.value(i))
        };
        for i in 0..b.num_rows() {
            let end = e.value(i);
            if one_end {
                assert_eq!(end, batch_end);
            } else {
                assert!(end <= batch_end, "a row ends after its batch");
            }
            let prev = into.insert(
                (end, k.value(i).to_string()),
                (
                    int(2, i).unwrap(),
                    int(3, i).unwrap(),
                    int(4, i).unwrap(),
                    int(5, i),
                    int(6, i),
                    int(7, i),
                    {
                        let a = b.column(8).as_primitive::<Float64Type>();
                        a.is_valid(i).then(|| a.value(i))
                    },
                ),
            );
            assert!(
                prev.is_none(),
                "window {end} emitted key {} twice",
                k.value(i)
            );
        }
    }
}

/// The aggregates of `rows`, computed directly.
fn aggregates(rows: &[&Row]) -> Aggs {
    let xs: Vec<i64> = rows.iter().filter_map(|r| r.x).collect();
    let vs: std::collections::BTreeSet<&String> =
        rows.iter().filter_map(|r| r.v.as_ref()).collect();
    (
        rows.len() as i64,
        xs.len() as i64,
        vs.len() as i64,
        (!xs.is_empty()).then(|| xs.iter().sum()),
        xs.iter().min().copied(),
        (!xs.is_empty()).then(|| xs.iter().fold(0, |a, x| a ^ x)),
        (!xs.is_empty()).then(|| xs.iter().sum::<i64>() as f64 / xs.len() as f64),
    )
}

/// A checkpoint's window state through JSON, as a checkpoint stores it.
fn through_json(cp: &WindowCheckpoint) -> WindowCheckpoint {
    serde_json::from_str(&serde_json::to_string(cp).unwrap()).unwrap()
}

/// Each window of `kind` over the on-time rows, computed directly.
fn brute_force(kind: WindowKind, rows: &[Row]) -> Results {
    let slide = kind.slide_ns();
    let mut out = Results::new();
    let last = rows.iter().map(|r| r.ts).max().unwrap() / slide;
    for e in 0..=last + kind.span() + 1 {
        let (lo, hi) = (kind.first_slice(e) * slide, e * slide);
        let mut by_key: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.ts >= lo && r.ts < hi) {
            by_key.entry(&r.k).or_default().push(r);
        }
        for (k, rs) in by_key {
            out.insert((hi, k.to_string()), aggregates(&rs));
        }
    }
    out
}

/// Feeds `rows` in batches with the watermark 10 s behind, snapshotting into a fresh operator
/// (built by `make`) after batch `restore_at`, if given. Returns each output's results.
async fn run(windows: &[&str], rows: &[Row], restore_at: Option<usize>) -> Vec<Results> {
    let make = || async {
        let mut op = operator(windows[0]).await;
        for w in &windows[1..] {
            op.fuse(operator(w).await).unwrap();
        }
        op
    };
    let mut op = make().await;
    let mut results = vec![Results::new(); windows.len()];
    let mut max_ts = i64::MIN;
    for (i, chunk) in rows.chunks(97).enumerate() {
        op.process(&batch(chunk)).unwrap();
        max_ts = max_ts.max(chunk.iter().map(|r| r.ts).max().unwrap());
        let out = op.advance(max_ts - 10 * S).unwrap();
        for (o, r) in results.iter_mut().enumerate() {
            collect(out.clone(), o, r);
        }
        if restore_at == Some(i) {
            let (cp, blobs) = op.snapshot().unwrap();
            let cp = through_json(&cp);
            let mut fresh = make().await;
            fresh.restore(&cp, &blobs).unwrap();
            op = fresh;
        }
    }
    let out = op.advance(i64::MAX).unwrap();
    for (o, r) in results.iter_mut().enumerate() {
        collect(out.clone(), o, r);
    }
    assert_eq!(op.stats().late_rows, 0);
    results
}

fn kind_of(sql: &str) -> WindowKind {
    let n: Vec<i64> = sql
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(|x| x.parse::<i64>().unwrap() * M)
        .collect();
    match sql.split('(').next().unwrap() {
        "hop" => WindowKind::hop(n[0], n[1]).unwrap(),
        "tumble" => WindowKind::tumble(n[0]).unwrap(),
        "cumulate" => WindowKind::cumulate(n[0], n[1]).unwrap(),
        other => panic!("{other}"),
    }
}

async fn check(windows: &[&str], restore_at: Option<usize>) {
    let rows = rows(7);
    let got = run(windows, &rows, restore_at).await;
    for (w, g) in windows.iter().zip(got) {
        let want = brute_force(kind_of(w), &rows);
        assert_eq!(g.len(), want.len(), "{w}: number of (window, key) rows");
        for (k, v) in &want {
            assert_eq!(g.get(k), Some(v), "{w}: window ending {} key {}", k.0, k.1);
        }
    }
}

const HOP5: &str = "hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE, ts)";
const HOP20: &str = "hop(INTERVAL '1' MINUTE, INTERVAL '20' MINUTE, ts)";
const TUMBLE: &str = "tumble(INTERVAL '1' MINUTE, ts)";
const CUMULATE: &str = "cumulate(INTERVAL '1' MINUTE, INTERVAL '7' MINUTE, ts)";

#[tokio::test]
async fn each_kind_equals_brute_force() {
    for w in [HOP5, HOP20, TUMBLE, CUMULATE] {
        check(&[w], None).await;
    }
}

#[tokio::test]
async fn fused_windows_share_slices() {
    let mut op = operator(HOP5).await;
    let other = operator(HOP20).await;
    assert_eq!(op.slice_signature(), other.slice_signature());
    assert_eq!(op.fuse(other).unwrap(), vec![1]);
    // The seven aggregates are shared, not repeated.
    let WindowAggregate::Slices(s) = &op else {
        panic!("a slice operator")
    };
    assert_eq!(s.aggs.len(), 7);
    check(&[HOP5, HOP20, CUMULATE], None).await;
}

#[tokio::test]
async fn snapshot_restore_midway_changes_nothing() {
    for at in [3, 40, 200] {
        check(&[HOP5, HOP20, CUMULATE], Some(at)).await;
    }
}

#[tokio::test]
async fn a_checkpoint_of_another_query_is_refused() {
    let mut a = operator(HOP5).await;
    a.process(&batch(&rows(1)[..50])).unwrap();
    let (cp, blobs) = a.snapshot().unwrap();
    let mut b = operator(HOP20).await;
    let e = b.restore(&cp, &blobs).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");
    let mut cp = serde_json::to_value(&cp).unwrap();
    cp["layout"] = serde_json::json!(1);
    let cp: WindowCheckpoint = serde_json::from_value(cp).unwrap();
    let e = operator(HOP5)
        .await
        .restore(&cp, &blobs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layout 1"), "{e}");
}

/// Slices the windows no longer need are dropped, and the keys and pairs of dropped slices
/// reclaimed: state follows the widest window, not the stream.
#[tokio::test]
async fn state_is_bounded_by_the_widest_window() {
    let mut op = operator(HOP5).await;
    let mut max_ts = 0;
    let mut peak_keys = 0;
    for minute in 0..120i64 {
        let rows: Vec<Row> = (0..300)
            .map(|i| Row {
                k: format!("m{minute}-{}", i % 100),
                v: Some(format!("{i}")),
                x: Some(i),
                ts: minute * M + i * 100_000_000,
            })
            .collect();
        max_ts = max_ts.max(rows.last().unwrap().ts);
        op.process(&batch(&rows)).unwrap();
        op.advance(max_ts - S).unwrap();
        let WindowAggregate::Slices(s) = &op else {
            panic!("a slice operator")
        };
        assert!(s.slices.len() <= 6, "{} slices held", s.slices.len());
        peak_keys = peak_keys.max(s.dict.len());
    }
    assert!(peak_keys < 100 * 6 + 4096 * 2, "{peak_keys} keys held");
    let WindowAggregate::Slices(s) = &op else {
        panic!("a slice operator")
    };
    assert!(s.pairs[0].len() < 300 * 6 * super::slices::PAIR_GROWTH + 4096 * 2);
}

const SESSION_10S: &str = "session(INTERVAL '10' SECOND, ts)";
const GAP: i64 = 10 * S;

/// The sessions of each key over `rows` (those on time), computed directly: a key's rows
/// sorted by time, a new session wherever the next row is `GAP` or more after the last.
fn sessions_brute_force(rows: &[&Row]) -> Results {
    let mut by_key: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_key.entry(&r.k).or_default().push(r);
    }
    let mut out = Results::new();
    for (k, mut rs) in by_key {
        rs.sort_by_key(|r| r.ts);
        let mut flush = |rs: &[&Row]| {
            out.insert((rs.last().unwrap().ts + GAP, k.to_string()), aggregates(rs));
        };
        let mut start = 0;
        for i in 1..rs.len() {
            if rs[i].ts - rs[i - 1].ts >= GAP {
                flush(&rs[start..i]);
                start = i;
            }
        }
        flush(&rs[start..]);
    }
    out
}

/// Keys with rows further apart than the gap now and then: sessions of a few rows to a few
/// dozen, disordered by up to 8 s.
fn session_rows(seed: u64) -> Vec<Row> {
    rows(seed)
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            // Each key goes quiet for a while now and then.
            if (r.ts / (37 * S)) % 3 == (i % 2) as i64 {
                r.k = format!("q{}", r.k);
            }
            r
        })
        .collect()
}

/// Feeds `rows` in batches of 4 with the watermark `lag` behind the newest row, snapshotting
/// into a fresh operator after batch `restore_at`; returns what it emitted and the rows that
/// were on time (not older than the watermark when they came).
async fn run_sessions(
    rows: &[Row],
    lag: i64,
    restore_at: Option<usize>,
) -> (Results, Vec<&Row>, u64) {
    let mut op = operator(SESSION_10S).await;
    let mut got = Results::new();
    let mut on_time = Vec::new();
    let (mut max_ts, mut wm) = (i64::MIN, i64::MIN);
    for (i, chunk) in rows.chunks(4).enumerate() {
        on_time.extend(chunk.iter().filter(|r| r.ts >= wm));
        op.process(&batch(chunk)).unwrap();
        max_ts = max_ts.max(chunk.iter().map(|r| r.ts).max().unwrap());
        wm = wm.max(max_ts - lag);
        collect_rows(op.advance(wm).unwrap(), 0, &mut got, false);
        if restore_at == Some(i) {
            let (cp, blobs) = op.snapshot().unwrap();
            let cp = through_json(&cp);
            assert!(matches!(cp, WindowCheckpoint::Session(_)));
            let mut fresh = operator(SESSION_10S).await;
            fresh.restore(&cp, &blobs).unwrap();
            assert_eq!(fresh.stats().open_panes, op.stats().open_panes);
            op = fresh;
        }
    }
    let late = op.stats().late_rows;
    collect_rows(op.advance(i64::MAX).unwrap(), 0, &mut got, false);
    (got, on_time, late)
}

fn assert_results(got: &Results, want: &Results, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: number of sessions");
    for (k, v) in want {
        assert_eq!(
            got.get(k),
            Some(v),
            "{what}: session ending {} key {}",
            k.0,
            k.1
        );
    }
}

/// Sessions over input disordered within the watermark: rows arriving before a session's
/// earlier rows extend it backwards, and a row bridging two sessions of a key merges them
/// (count, distinct and merged aggregates alike).
#[tokio::test]
async fn sessions_equal_brute_force() {
    let rows = session_rows(11);
    let (got, on_time, late) = run_sessions(&rows, 10 * S, None).await;
    assert_eq!(on_time.len(), rows.len());
    assert_eq!(late, 0);
    let want = sessions_brute_force(&on_time);
    assert!(want.len() > 200, "{} sessions", want.len());
    assert_results(&got, &want, "session");
}

/// With the watermark closer than the disorder, rows older than it are dropped and counted,
/// and every session is that of the rows kept.
#[tokio::test]
async fn sessions_drop_late_rows() {
    let rows = session_rows(12);
    let (got, on_time, late) = run_sessions(&rows, 3 * S, None).await;
    assert!(late > 50, "{late} late rows");
    assert_eq!(late as usize, rows.len() - on_time.len());
    assert_results(&got, &sessions_brute_force(&on_time), "session");
}

/// A snapshot taken while sessions are open, restored into a new operator, changes nothing.
#[tokio::test]
async fn sessions_snapshot_restore_midway_changes_nothing() {
    let rows = session_rows(13);
    let want = sessions_brute_force(&rows.iter().collect::<Vec<_>>());
    for at in [0, 5, 77] {
        let (got, on_time, _) = run_sessions(&rows, 10 * S, Some(at)).await;
        assert_eq!(on_time.len(), rows.len());
        assert_results(&got, &want, &format!("restored after batch {at}"));
    }
}

/// Sessions bridged by an out-of-order row merge into one, and the key's state is dropped
/// once its sessions close.
#[tokio::test]
async fn a_bridging_row_merges_two_sessions() {
    let row = |ts: i64, x: i64| Row {
        k: "a".into(),
        v: Some(format!("v{x}")),
        x: Some(x),
        ts,
    };
    let mut op = operator(SESSION_10S).await;
    op.process(&batch(&[row(0, 1), row(15 * S, 2)])).unwrap();
    assert_eq!(op.stats().open_panes, 2);
    // 7 s: less than the gap after 0 and before 15 s, so all three are one session.
    op.process(&batch(&[row(7 * S, 3)])).unwrap();
    assert_eq!(op.stats().open_panes, 1);
    assert_eq!(op.next_end(), Some(25 * S));
    assert!(op.advance(24 * S).unwrap().is_empty());
    let mut got = Results::new();
    collect_rows(op.advance(25 * S).unwrap(), 0, &mut got, false);
    let want: Results = [(
        (25 * S, "a".to_string()),
        (3, 3, 3, Some(6), Some(1), Some(0), Some(2.0)),
    )]
    .into();
    assert_eq!(got, want);
    assert_eq!(op.stats().open_panes, 0);
    // A row at the old session's end starts a new one (the gap is exclusive).
    op.process(&batch(&[row(25 * S, 4)])).unwrap();
    assert_eq!(op.next_end(), Some(35 * S));
    assert_eq!(op.stats().late_rows, 0);
    op.process(&batch(&[row(24 * S, 5)])).unwrap();
    assert_eq!(op.stats().late_rows, 1);
}

/// Many open sessions of one key, arriving newest first: each stays its own session (and
/// costs a map lookup, not a shift of a per-key list).
#[tokio::test]
async fn many_sessions_of_one_key_out_of_order() {
    let mut op = operator(SESSION_10S).await;
    let rows: Vec<Row> = (0..2000i64)
        .rev()
        .map(|i| Row {
            k: "a".into(),
            v: None,
            x: Some(i),
            ts: i * 11 * S,
        })
        .collect();
    for chunk in rows.chunks(100) {
        op.process(&batch(chunk)).unwrap();
    }
    assert_eq!(op.stats().open_panes, 2000);
    let mut got = Results::new();
    collect_rows(op.advance(i64::MAX).unwrap(), 0, &mut got, false);
    assert_eq!(got.len(), 2000);
    assert!(got.values().all(|v| v.0 == 1));
    assert_eq!(op.stats().open_panes, 0);
}

/// `b` with column `i` replaced by strings of the same name (a damaged checkpoint blob).
fn column_as_strings(b: &RecordBatch, i: usize) -> RecordBatch {
    let mut cols = b.columns().to_vec();
    let mut fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    cols[i] = Arc::new(StringArray::from_iter_values(
        (0..b.num_rows()).map(|r| r.to_string()),
    ));
    fields[i] = Field::new(fields[i].name(), DataType::Utf8, false);
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

/// A damaged session checkpoint (a column of the wrong type) is refused with an error.
#[tokio::test]
async fn a_damaged_session_checkpoint_is_an_error() {
    let mut op = operator(SESSION_10S).await;
    op.process(&batch(&session_rows(3)[..40])).unwrap();
    let (cp, blobs) = op.snapshot().unwrap();
    // The start column (after the key) as strings.
    let damaged = column_as_strings(&blobs[0], 1);
    let e = operator(SESSION_10S)
        .await
        .restore(&cp, &[damaged])
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong shape"), "{e}");
}

/// A damaged slice checkpoint (a slice's row counts as strings) is refused with an error.
#[tokio::test]
async fn a_damaged_slice_checkpoint_is_an_error() {
    let mut op = operator(HOP5).await;
    op.process(&batch(&rows(5)[..200])).unwrap();
    let (cp, mut blobs) = op.snapshot().unwrap();
    blobs[1] = column_as_strings(&blobs[1], 1);
    let e = operator(HOP5)
        .await
        .restore(&cp, &blobs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("wrong shape"), "{e}");
}
