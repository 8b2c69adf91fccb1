//! Functions SQL toolkits call on connect and on reflection that the pg_catalog layer lacks.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use crate::auth::PG_VERSION;

/// What `version()` answers: SQLAlchemy's postgresql dialect reads the server version from
/// `PostgreSQL N.N` at its start (and refuses to connect otherwise); the rest says what this is.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {PG_VERSION} (skystream {}, Apache DataFusion {}), read-only",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    )
}

fn rows(args: &[ColumnarValue]) -> Option<usize> {
    args.iter().find_map(|a| match a {
        ColumnarValue::Array(a) => Some(a.len()),
        ColumnarValue::Scalar(_) => None,
    })
}

/// `n` NULL strings, or a NULL scalar when every argument is a scalar.
fn null_text(args: &[ColumnarValue]) -> ColumnarValue {
    match rows(args) {
        Some(n) => ColumnarValue::Array(Arc::new(StringArray::new_null(n)) as ArrayRef),
        None => ColumnarValue::Scalar(ScalarValue::Utf8(None)),
    }
}

pub(crate) fn register(ctx: &SessionContext) {
    let version = version_string();
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    ));
    // Every type lives in pg_catalog, which is always on the search path.
    ctx.register_udf(create_udf(
        "pg_type_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            Ok(match rows(args) {
                Some(n) => ColumnarValue::Array(Arc::new(BooleanArray::from(vec![true; n]))),
                None => ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))),
            })
        }),
    ));
    // No object carries a comment.
    ctx.register_udf(create_udf(
        "obj_description",
        vec![DataType::Int32, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| Ok(null_text(args))),
    ));
    ctx.register_udf(create_udf(
        "col_description",
        vec![DataType::Int32, DataType::Int32],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| Ok(null_text(args))),
    ));
}
