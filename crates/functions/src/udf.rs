//! SQL functions skystream adds to DataFusion's: `keywords`, `hashtags`, and the window
//! functions `hop` and `tumble` that are only meaningful in a streaming `GROUP BY`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use skystream_engine::window::{KINDS, KindDef, kind_def, window_type};

use crate::text::{Stopwords, for_each_hashtag, for_each_keyword_with};

/// The most keywords (or hashtags) one post yields; the rest of a longer post is ignored. A
/// real post (300 characters) has a few dozen words; a crafted one with 200,000 must not cost
/// more than a real one by much.
pub const MAX_TOKENS_PER_POST: usize = 256;

/// The distinct tokens of one row, by 64-bit hash under a key random per process (no
/// allocation per word; two distinct words of a post collide with probability 2^-64): linear
/// in the row's words where comparing each word with every earlier one was quadratic.
#[derive(Default)]
struct Dedup {
    key: hashbrown::DefaultHashBuilder,
    seen: hashbrown::HashSet<u64>,
}

impl Dedup {
    fn clear(&mut self) {
        self.seen.clear();
    }
    fn len(&self) -> usize {
        self.seen.len()
    }
    /// True when `w` was not seen in this row yet.
    fn insert(&mut self, w: &str) -> bool {
        use std::hash::BuildHasher;
        self.seen.insert(self.key.hash_one(w))
    }
}

/// Every function skystream registers.
pub fn all() -> Vec<ScalarUDF> {
    let mut f = vec![
        ScalarUDF::from(Keywords::new()),
        ScalarUDF::from(Hashtags::new()),
    ];
    f.extend(KINDS.iter().map(|k| ScalarUDF::from(WindowFn::new(k))));
    f
}

fn string_types() -> Vec<DataType> {
    vec![DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View]
}

fn list_of_strings() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn to_utf8(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(if a.data_type() == &DataType::Utf8 {
        a.clone()
    } else {
        arrow::compute::cast(a, &DataType::Utf8)?
    })
}

/// `keywords(text [, langs])`: the normalised keywords of a text, deduplicated per row, as a
/// list. With `langs` (a list of BCP-47 tags, e.g. the post's), stopwords of those languages
/// (and English) are removed; without, stopwords of every supported language.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Keywords {
    signature: Signature,
}

impl Keywords {
    pub fn new() -> Self {
        let mut sigs: Vec<TypeSignature> = string_types()
            .into_iter()
            .map(|t| TypeSignature::Exact(vec![t]))
            .collect();
        for t in string_types() {
            sigs.push(TypeSignature::Exact(vec![t, list_of_strings()]));
        }
        Self {
            signature: Signature::one_of(sigs, Volatility::Immutable),
        }
    }
}

impl Default for Keywords {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for Keywords {
    fn name(&self) -> &str {
        "keywords"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(list_of_strings())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let text = to_utf8(&arrays[0])?;
        let text = text.as_string::<i32>();
        // Language tags of each row: the list's offsets into one string array.
        let langs = match arrays.get(1) {
            Some(l) => {
                let l = l.as_list::<i32>();
                Some((l.clone(), to_utf8(l.values())?))
            }
            None => None,
        };
        let mut out = ListBuilder::with_capacity(StringBuilder::with_capacity(n * 8, n * 64), n);
        let mut seen = Dedup::default();
        let mut word = String::with_capacity(64);
        for i in 0..n {
            if text.is_null(i) {
                out.append_null();
                continue;
            }
            let stop = match &langs {
                Some((l, values)) if l.is_valid(i) && l.value_length(i) > 0 => {
                    let values = values.as_string::<i32>();
                    let offsets = l.value_offsets();
                    Stopwords::for_langs(
                        (offsets[i] as usize..offsets[i + 1] as usize)
                            .filter(|&j| values.is_valid(j))
                            .map(|j| values.value(j)),
                    )
                }
                _ => Stopwords::ALL,
            };
            seen.clear();
            for_each_keyword_with(text.value(i), stop, &mut word, |w| {
                // A word counts once per post, and a post gives at most MAX_TOKENS_PER_POST.
                if seen.len() < MAX_TOKENS_PER_POST && seen.insert(w) {
                    out.values().append_value(w);
                }
            });
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `hashtags(text)`: the `#hashtags` written in a text, normalised (lowercase, no `#`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Hashtags {
    signature: Signature,
}

impl Hashtags {
    pub fn new() -> Self {
        Self {
            signature: Signature::uniform(1, string_types(), Volatility::Immutable),
        }
    }
}

impl Default for Hashtags {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for Hashtags {
    fn name(&self) -> &str {
        "hashtags"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(list_of_strings())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let text = to_utf8(&arrays[0])?;
        let text = text.as_string::<i32>();
        let mut out = ListBuilder::new(StringBuilder::new());
        let mut seen = Dedup::default();
        for i in 0..n {
            if text.is_null(i) {
                out.append_null();
                continue;
            }
            seen.clear();
            for_each_hashtag(text.value(i), |t| {
                if seen.len() < MAX_TOKENS_PER_POST && seen.insert(t) {
                    out.values().append_value(t);
                }
            });
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The window functions ([`KINDS`]: `hop`, `tumble`, `cumulate`), used in `GROUP BY`. Their
/// value is a `STRUCT<start TIMESTAMP, end TIMESTAMP>`. The planner appends the event-time
/// column as a hidden last argument; the column name stays the one the user wrote.
#[derive(Debug)]
pub struct WindowFn {
    kind: &'static KindDef,
    signature: Signature,
}

impl PartialEq for WindowFn {
    fn eq(&self, other: &Self) -> bool {
        self.kind.name == other.kind.name
    }
}
impl Eq for WindowFn {}
impl std::hash::Hash for WindowFn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.kind.name.hash(state);
    }
}

impl WindowFn {
    pub fn new(kind: &'static KindDef) -> Self {
        Self {
            kind,
            signature: Signature::variadic_any(Volatility::Volatile),
        }
    }

    /// The window function called `name`, if there is one.
    pub fn named(name: &str) -> Option<Self> {
        kind_def(name).map(Self::new)
    }

    fn visible_args(&self) -> usize {
        self.kind.args
    }
}

impl ScalarUDFImpl for WindowFn {
    fn name(&self) -> &str {
        self.kind.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let n = self.visible_args();
        if arg_types.len() != n && arg_types.len() != n + 1 {
            return plan_err!(
                "{} takes {n} interval argument{}: {}",
                self.kind.name,
                if n > 1 { "s" } else { "" },
                self.kind.usage
            );
        }
        for t in &arg_types[..n] {
            if !matches!(t, DataType::Interval(_) | DataType::Duration(_)) {
                return plan_err!(
                    "{}: arguments must be intervals, e.g. {}; got {t}",
                    self.kind.name,
                    self.kind.example
                );
            }
        }
        Ok(window_type())
    }
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let shown: Vec<String> = args
            .iter()
            .take(self.visible_args())
            .map(|a| a.schema_name().to_string())
            .collect();
        Ok(format!("{}({})", self.kind.name, shown.join(",")))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "{}() can only be used in the GROUP BY of a streaming query",
            self.kind.name
        )
    }
}
