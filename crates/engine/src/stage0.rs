//! Stage 0 on several threads: the heads of every flow (stateless plans over source batches)
//! run on a group of batches at once, each batch on one thread with its own copy of the
//! heads, while this thread feeds the windows the rows of each batch as soon as it and every
//! batch before it are computed: windows take rows in input order, so results are those of
//! one thread, and the serial window work overlaps the other threads' head work.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;

use crate::flow::{Flow, Head, run_heads};
use crate::source::Position;
use crate::{Error, Result};

/// What the heads of each flow reading a batch's source computed from it: (flow, by head).
type HeadRows = Vec<(usize, Vec<(usize, Vec<RecordBatch>)>)>;

/// Rows for the sinks of flows without windows, per batch: (flow, rows).
pub(crate) type SinkRows = Vec<Vec<(usize, Vec<RecordBatch>)>>;

fn heads_of<'h>(
    flows: impl Iterator<Item = (usize, &'h [Head])>,
    source: usize,
    batch: &RecordBatch,
    ctx: &Arc<TaskContext>,
) -> Result<HeadRows> {
    let mut out = Vec::new();
    if batch.num_rows() == 0 {
        return Ok(out);
    }
    for (f, heads) in flows {
        let rows = run_heads(heads, source, batch, ctx)?;
        if !rows.is_empty() {
            out.push((f, rows));
        }
    }
    Ok(out)
}

fn apply(
    flows: &mut [Flow],
    in_rows: usize,
    rows: HeadRows,
) -> Result<Vec<(usize, Vec<RecordBatch>)>> {
    let mut out = Vec::new();
    for (f, by_head) in rows {
        let r = flows[f].apply(in_rows, by_head)?;
        if !r.is_empty() {
            out.push((f, r));
        }
    }
    Ok(out)
}

/// Computes the heads of every batch of `group` (on this thread and one per fork) and gives
/// their rows to the flows in input order; returns what goes to the sinks, per batch.
pub(crate) fn run(
    flows: &mut [Flow],
    forks: &[Vec<Vec<Head>>],
    group: &[(usize, RecordBatch, Option<Position>)],
    ctx: &Arc<TaskContext>,
) -> Result<SinkRows> {
    let own = |flows: &[Flow], k: usize| {
        let (s, b, _) = &group[k];
        heads_of(
            flows
                .iter()
                .enumerate()
                .map(|(f, x)| (f, x.heads.as_slice())),
            *s,
            b,
            ctx,
        )
    };
    if forks.is_empty() || group.len() == 1 {
        let mut out = Vec::with_capacity(group.len());
        for (k, (_, batch, _)) in group.iter().enumerate() {
            let rows = own(flows, k)?;
            out.push(apply(flows, batch.num_rows(), rows)?);
        }
        return Ok(out);
    }
    let n = group.len();
    // The next batch nobody computes yet, and the computed ones waiting for their turn.
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Result<HeadRows>>>> = Mutex::new((0..n).map(|_| None).collect());
    let ready = Condvar::new();
    std::thread::scope(|scope| {
        for fork in forks {
            let (next, done, ready) = (&next, &done, &ready);
            scope.spawn(move || {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= n {
                        return;
                    }
                    let (s, b, _) = &group[k];
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        heads_of(
                            fork.iter().enumerate().map(|(f, h)| (f, h.as_slice())),
                            *s,
                            b,
                            ctx,
                        )
                    }))
                    .unwrap_or_else(|_| Err(Error::plan("a stage-0 thread panicked")));
                    done.lock().unwrap()[k] = Some(r);
                    ready.notify_all();
                }
            });
        }
        // This thread: the windows first (in order), heads when no result is waiting.
        let mut out = Vec::with_capacity(n);
        let mut failed = None;
        while out.len() < n {
            let turn = out.len();
            let waiting = done.lock().unwrap()[turn].take();
            let rows = match waiting {
                Some(r) => r,
                None => {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k < n {
                        let r = own(flows, k);
                        if k != turn {
                            done.lock().unwrap()[k] = Some(r);
                            continue;
                        }
                        r
                    } else {
                        let mut d = done.lock().unwrap();
                        while d[turn].is_none() {
                            d = ready.wait(d).unwrap();
                        }
                        d[turn].take().expect("present")
                    }
                }
            };
            match rows.and_then(|r| apply(flows, group[turn].1.num_rows(), r)) {
                Ok(o) => out.push(o),
                Err(e) => {
                    failed = Some(e);
                    // The other threads stop taking batches.
                    next.store(n, Ordering::Relaxed);
                    break;
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    })
}
