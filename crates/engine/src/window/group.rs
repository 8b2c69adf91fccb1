//! What every window operator reads the same way: the GROUP BY (event time, keys, the window
//! call), the rows on time for the watermark, the aggregates' arguments, and the memory charge.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampNanosecondArray};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::AggregateExec;

use super::kind::WindowKind;
use super::slices::Agg;
use super::{partial_of, window_call};
use crate::{Error, Result};

/// The GROUP BY of a windowed aggregate.
pub(super) struct Grouping {
    pub ts_expr: Arc<dyn PhysicalExpr>,
    /// Non-window group expressions, in group order.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Their columns (one constant column when the window is the only key).
    pub key_schema: SchemaRef,
    /// Position of the window column among the group columns.
    pub window_pos: usize,
}

impl Grouping {
    /// The grouping of `agg` and its window kind.
    pub fn of(agg: &AggregateExec) -> Result<(Self, WindowKind)> {
        let inner = partial_of(agg);
        let group_by = inner.group_expr();
        if !group_by.is_single() {
            return Err(Error::plan(
                "GROUPING SETS, CUBE and ROLLUP are not supported with windows",
            ));
        }
        let input_schema = inner.input_schema();
        let mut window = None;
        let mut keys = Vec::new();
        let mut key_fields = Vec::new();
        for (i, (e, name)) in group_by.expr().iter().enumerate() {
            if let Some(w) = window_call(e)? {
                if window.is_some() {
                    return Err(Error::plan(format!(
                        "a GROUP BY may hold only one window ({})",
                        super::kind::kind_names()
                    )));
                }
                window = Some((i, w));
            } else {
                keys.push(e.clone());
                key_fields.push(Field::new(
                    name,
                    e.data_type(&input_schema)?,
                    e.nullable(&input_schema)?,
                ));
            }
        }
        let Some((window_pos, (kind, ts_expr))) = window else {
            return Err(Error::plan("internal: aggregate has no window"));
        };
        if key_fields.is_empty() {
            key_fields.push(Field::new("_", DataType::Boolean, true));
        }
        Ok((
            Self {
                ts_expr,
                keys,
                key_schema: Arc::new(Schema::new(key_fields)),
                window_pos,
            },
            kind,
        ))
    }

    /// Event time and keys, as text.
    pub fn describe(&self) -> String {
        let mut s = format!("time={} keys=[", self.ts_expr);
        for k in &self.keys {
            s.push_str(&format!("{k}, "));
        }
        s.push(']');
        s
    }

    pub fn key_types(&self) -> Vec<String> {
        self.key_schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect()
    }

    /// It and `aggs` read column `map[i]` of input `schema` wherever they read column `i`
    /// (an operator reading another plan of the same rows with more columns).
    pub fn remap_input(&mut self, aggs: &mut [Agg], map: &[usize], schema: &Schema) -> Result<()> {
        let remap = |e: &Arc<dyn PhysicalExpr>| super::remap_columns(e, map, schema);
        self.ts_expr = remap(&self.ts_expr)?;
        self.keys = self.keys.iter().map(remap).collect::<Result<_>>()?;
        for a in aggs {
            a.remap_input(map, schema)?;
        }
        Ok(())
    }

    /// The rows of `batch` not older than `watermark` with their event times (`None`: no row
    /// is left), and how many were dropped as late (NULL times included).
    pub fn on_time(
        &self,
        batch: &RecordBatch,
        watermark: i64,
    ) -> Result<(Option<(RecordBatch, TimestampNanosecondArray)>, usize)> {
        if batch.num_rows() == 0 {
            return Ok((None, 0));
        }
        let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let ts = self.ts_expr.evaluate(batch)?.into_array(batch.num_rows())?;
        let ts = if ts.data_type() == &ns {
            ts
        } else {
            cast(&ts, &ns)?
        };
        let ts: TimestampNanosecondArray = ts.as_primitive().clone();
        let late = if ts.null_count() == 0 {
            ts.values().iter().filter(|&&t| t < watermark).count()
        } else {
            ts.iter()
                .filter(|t| !matches!(t, Some(t) if *t >= watermark))
                .count()
        };
        if late == 0 {
            return Ok((Some((batch.clone(), ts)), 0));
        }
        if late == batch.num_rows() {
            return Ok((None, late));
        }
        let keep: BooleanArray = ts
            .iter()
            .map(|t| Some(matches!(t, Some(t) if t >= watermark)))
            .collect();
        let batch = filter_record_batch(batch, &keep)?;
        let ts = arrow::compute::filter(&ts, &keep)?.as_primitive().clone();
        Ok((Some((batch, ts)), late))
    }

    /// Group key columns (a constant column when the only key is the window).
    pub fn key_columns(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        if self.keys.is_empty() {
            return Ok(vec![Arc::new(BooleanArray::from(vec![
                true;
                batch.num_rows()
            ]))]);
        }
        self.keys
            .iter()
            .map(|k| Ok(k.evaluate(batch)?.into_array(batch.num_rows())?))
            .collect()
    }
}

/// Each aggregate's argument columns and FILTER mask over `batch`.
pub(super) type Args = (Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>);

pub(super) fn evaluate_args(aggs: &[Agg], batch: &RecordBatch) -> Result<Args> {
    let n = batch.num_rows();
    let args = aggs
        .iter()
        .map(|a| {
            a.args
                .iter()
                .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let filters = aggs
        .iter()
        .map(|a| {
            a.filter
                .as_ref()
                .map(|f| -> Result<BooleanArray> {
                    Ok(f.evaluate(batch)?.into_array(n)?.as_boolean().clone())
                })
                .transpose()
        })
        .collect::<Result<_>>()?;
    Ok((args, filters))
}

fn fmt_bytes(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

/// An operator's state charged to the pipeline's memory pool (nothing until tracked).
#[derive(Default)]
pub(super) struct MemoryCharge(Option<(MemoryReservation, Option<usize>)>);

impl MemoryCharge {
    pub fn new(pool: &Arc<dyn MemoryPool>, name: impl Into<String>) -> Self {
        let limit = match pool.memory_limit() {
            MemoryLimit::Finite(l) => Some(l),
            MemoryLimit::Infinite | MemoryLimit::Unknown => None,
        };
        Self(Some((MemoryConsumer::new(name).register(pool), limit)))
    }

    /// Charges `bytes` of state (`what` it holds, for the error) or fails with
    /// [`Error::MemoryLimit`].
    pub fn resize(&mut self, bytes: usize, what: &str) -> Result<()> {
        let Some((r, limit)) = &mut self.0 else {
            return Ok(());
        };
        r.try_resize(bytes).map_err(|e| {
            let limit = match limit {
                Some(l) => format!(" of {}", fmt_bytes(*l)),
                None => String::new(),
            };
            Error::MemoryLimit(format!(
                "{}: its state ({what}) needs {}, over the pipeline's memory limit{limit}; \
                 narrow the window, group by fewer keys or raise the limit ({e})",
                r.consumer().name(),
                fmt_bytes(bytes),
            ))
        })
    }
}
