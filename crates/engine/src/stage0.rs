//! Stage 0 on several threads: the heads of every flow (stateless plans over source batches)
//! run on a group of batches at once, each batch on one thread with its own copy of the
//! heads; the results come back in input order for the windows, which stay on one thread.

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::execution::TaskContext;

use crate::flow::{Flow, Head, run_heads};
use crate::source::Position;
use crate::{Error, Result};

/// What the heads of each flow reading a batch's source computed from it: (flow, by head).
pub(crate) type HeadRows = Vec<(usize, Vec<(usize, Vec<RecordBatch>)>)>;

fn heads_of(
    flows: impl Iterator<Item = (usize, impl AsRef<[Head]>)>,
    source: usize,
    batch: &RecordBatch,
    ctx: &Arc<TaskContext>,
) -> Result<HeadRows> {
    let mut out = Vec::new();
    if batch.num_rows() == 0 {
        return Ok(out);
    }
    for (f, heads) in flows {
        let rows = run_heads(heads.as_ref(), source, batch, ctx)?;
        if !rows.is_empty() {
            out.push((f, rows));
        }
    }
    Ok(out)
}

/// Runs the heads on each batch of `group` (batch `k` on thread `k % threads`: this one and
/// one per fork), in input order.
pub(crate) fn run(
    flows: &[Flow],
    forks: &[Vec<Vec<Head>>],
    group: &[(usize, RecordBatch, Option<Position>)],
    ctx: &Arc<TaskContext>,
) -> Result<Vec<HeadRows>> {
    let local = |k: usize| {
        let (s, b, _) = &group[k];
        heads_of(
            flows.iter().enumerate().map(|(f, x)| (f, &x.heads)),
            *s,
            b,
            ctx,
        )
    };
    if forks.is_empty() || group.len() == 1 {
        return (0..group.len()).map(local).collect();
    }
    let threads = forks.len() + 1;
    let mut results: Vec<Option<Result<HeadRows>>> = (0..group.len()).map(|_| None).collect();
    let mut panicked = None;
    std::thread::scope(|scope| {
        let handles: Vec<_> = forks
            .iter()
            .enumerate()
            .map(|(w, fork)| {
                scope.spawn(move || {
                    (w + 1..group.len())
                        .step_by(threads)
                        .map(|k| {
                            let (s, b, _) = &group[k];
                            (k, heads_of(fork.iter().enumerate(), *s, b, ctx))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for k in (0..group.len()).step_by(threads) {
            results[k] = Some(local(k));
        }
        for h in handles {
            match h.join() {
                Ok(done) => {
                    for (k, r) in done {
                        results[k] = Some(r);
                    }
                }
                Err(p) => {
                    let why = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    panicked = Some(Error::plan(format!("a stage-0 thread panicked: {why}")));
                }
            }
        }
    });
    if let Some(e) = panicked {
        return Err(e);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::plan("internal: a batch was not computed"))))
        .collect()
}
