//! Window kinds: each is defined here once — its SQL name and arguments, and its geometry.
//! Tumble, hop and cumulate are computed by the slice operator ([`super::SliceAggregate`]):
//! rows fall into slices of the kind's slide, and a window is a run of consecutive slices
//! ending at a slide boundary. Sessions have no common boundaries and have their own operator
//! ([`super::SessionAggregate`]). Adding a kind is one entry in [`KINDS`], one arm per method
//! below and, if slices cannot compute it, an operator module.

use crate::{Error, Result};

/// Name of the sliding window: `hop(slide, width)`.
pub const HOP: &str = "hop";
/// Name of the tumbling window: `tumble(width)`.
pub const TUMBLE: &str = "tumble";
/// Name of the cumulating window: `cumulate(step, max)` (Flink's CUMULATE).
pub const CUMULATE: &str = "cumulate";
/// Name of the session window: `session(gap)` (Flink's SESSION), per key.
pub const SESSION: &str = "session";

/// The most slides one window may span: state is kept per slide.
pub const MAX_SLICES_PER_WINDOW: i64 = 100_000;

/// A window kind with its sizes in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back windows of `width`.
    Tumble { width: i64 },
    /// Windows of `width` starting every `slide` (`width` a multiple of `slide`).
    Hop { slide: i64, width: i64 },
    /// Windows starting every `max` and growing by `step` up to `max`: `[k·max, k·max + j·step)`
    /// for `j = 1 .. max/step`.
    Cumulate { step: i64, max: i64 },
    /// Per key, rows less than `gap` apart: `[first row, last row + gap)`.
    Session { gap: i64 },
}

/// What SQL sees of a kind.
pub struct KindDef {
    pub name: &'static str,
    /// Its interval arguments (the event time is appended by the planner).
    pub args: usize,
    pub usage: &'static str,
    pub example: &'static str,
    build: fn(&[i64]) -> Result<WindowKind>,
}

impl std::fmt::Debug for KindDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.usage)
    }
}

impl KindDef {
    /// The kind these interval arguments (in ns) describe.
    pub fn build(&self, args: &[i64]) -> Result<WindowKind> {
        if args.len() != self.args {
            return Err(Error::plan(format!(
                "{} takes {} interval argument{}: {}",
                self.name,
                self.args,
                if self.args > 1 { "s" } else { "" },
                self.usage
            )));
        }
        (self.build)(args)
    }
}

/// Every window kind SQL can name.
pub const KINDS: &[KindDef] = &[
    KindDef {
        name: TUMBLE,
        args: 1,
        usage: "tumble(width)",
        example: "tumble(INTERVAL '1' MINUTE)",
        build: |a| WindowKind::tumble(a[0]),
    },
    KindDef {
        name: HOP,
        args: 2,
        usage: "hop(slide, width)",
        example: "hop(INTERVAL '1' MINUTE, INTERVAL '10' MINUTE)",
        build: |a| WindowKind::hop(a[0], a[1]),
    },
    KindDef {
        name: CUMULATE,
        args: 2,
        usage: "cumulate(step, max)",
        example: "cumulate(INTERVAL '1' MINUTE, INTERVAL '1' HOUR)",
        build: |a| WindowKind::cumulate(a[0], a[1]),
    },
    KindDef {
        name: SESSION,
        args: 1,
        usage: "session(gap)",
        example: "session(INTERVAL '5' MINUTE)",
        build: |a| WindowKind::session(a[0]),
    },
];

/// The kind named `name`, if SQL knows it.
pub fn kind_def(name: &str) -> Option<&'static KindDef> {
    KINDS.iter().find(|k| k.name == name)
}

/// Whether `name` is a window function.
pub fn is_window_fn(name: &str) -> bool {
    kind_def(name).is_some()
}

/// The names of the window functions, for messages: "hop, tumble or cumulate".
pub fn kind_names() -> String {
    let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

pub(crate) fn fmt_ns(ns: i64) -> String {
    format!("{}s", ns as f64 / 1e9)
}

fn multiple(name: &str, what: (&str, i64), of: (&str, i64)) -> Result<i64> {
    if what.1 <= 0 || of.1 <= 0 {
        return Err(Error::plan(format!("{name}(): intervals must be positive")));
    }
    if what.1 % of.1 != 0 {
        return Err(Error::plan(format!(
            "{name}(): the {} ({}) must be a multiple of the {} ({})",
            what.0,
            fmt_ns(what.1),
            of.0,
            fmt_ns(of.1)
        )));
    }
    let n = what.1 / of.1;
    if n > MAX_SLICES_PER_WINDOW {
        return Err(Error::plan(format!(
            "{name}(): a {} of {} in steps of {} spans {n} slides; at most \
             {MAX_SLICES_PER_WINDOW} are allowed (state is kept per slide): make the {} longer",
            what.0,
            fmt_ns(what.1),
            fmt_ns(of.1),
            of.0
        )));
    }
    Ok(n)
}

impl WindowKind {
    pub fn tumble(width: i64) -> Result<Self> {
        multiple(TUMBLE, ("width", width), ("width", width))?;
        Ok(Self::Tumble { width })
    }

    pub fn hop(slide: i64, width: i64) -> Result<Self> {
        multiple(HOP, ("width", width), ("slide", slide))?;
        Ok(Self::Hop { slide, width })
    }

    pub fn cumulate(step: i64, max: i64) -> Result<Self> {
        multiple(CUMULATE, ("max", max), ("step", step))?;
        Ok(Self::Cumulate { step, max })
    }

    pub fn session(gap: i64) -> Result<Self> {
        if gap <= 0 {
            return Err(Error::plan(format!(
                "{SESSION}(): the gap must be positive"
            )));
        }
        Ok(Self::Session { gap })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Tumble { .. } => TUMBLE,
            Self::Hop { .. } => HOP,
            Self::Cumulate { .. } => CUMULATE,
            Self::Session { .. } => SESSION,
        }
    }

    /// The slice length: windows start and end on its multiples (sessions: the gap, the
    /// least time between two ends of a key's sessions).
    pub fn slide_ns(&self) -> i64 {
        match *self {
            Self::Tumble { width } | Self::Session { gap: width } => width,
            Self::Hop { slide, .. } => slide,
            Self::Cumulate { step, .. } => step,
        }
    }

    /// The longest window, in nanoseconds (sessions: the shortest).
    pub fn width_ns(&self) -> i64 {
        match *self {
            Self::Tumble { width } | Self::Hop { width, .. } | Self::Session { gap: width } => {
                width
            }
            Self::Cumulate { max, .. } => max,
        }
    }

    /// Slices in the longest window.
    pub fn span(&self) -> i64 {
        self.width_ns() / self.slide_ns()
    }

    /// The first slice of the window that ends where slice `end` begins (slices are numbered
    /// `t.div_euclid(slide)`; the window is slices `first .. end`).
    pub fn first_slice(&self, end: i64) -> i64 {
        match *self {
            Self::Tumble { .. } | Self::Session { .. } => end - 1,
            Self::Hop { .. } => end - self.span(),
            Self::Cumulate { .. } => (end - 1).div_euclid(self.span()) * self.span(),
        }
    }

    /// As SQL would write it.
    pub fn describe(&self) -> String {
        match *self {
            Self::Tumble { width } => format!("tumble({})", fmt_ns(width)),
            Self::Hop { slide, width } => format!("hop({}, {})", fmt_ns(slide), fmt_ns(width)),
            Self::Cumulate { step, max } => format!("cumulate({}, {})", fmt_ns(step), fmt_ns(max)),
            Self::Session { gap } => format!("session({})", fmt_ns(gap)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000_000_000;

    #[test]
    fn geometry() {
        let h = WindowKind::hop(M, 5 * M).unwrap();
        assert_eq!((h.slide_ns(), h.span()), (M, 5));
        assert_eq!(h.first_slice(10), 5);
        let t = WindowKind::tumble(M).unwrap();
        assert_eq!(t.first_slice(10), 9);
        let c = WindowKind::cumulate(M, 4 * M).unwrap();
        // Windows ending at slices 9, 10, 11, 12 start at 8; the one ending at 13 at 12.
        assert_eq!(
            (9..=13).map(|e| c.first_slice(e)).collect::<Vec<_>>(),
            vec![8, 8, 8, 8, 12]
        );
        assert_eq!(c.first_slice(-3), -4);
    }

    #[test]
    fn sizes_are_checked() {
        assert!(WindowKind::hop(2 * M, 3 * M).is_err());
        assert!(WindowKind::hop(0, M).is_err());
        assert!(WindowKind::cumulate(M, M / 2).is_err());
        let e = WindowKind::hop(1, M).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
        assert!(kind_def("cumulate").unwrap().build(&[M]).is_err());
        assert!(WindowKind::session(0).is_err());
        assert_eq!(kind_names(), "tumble, hop, cumulate or session");
    }
}
