//! Splitting a pipeline script into statements, and the parts of the dialect DataFusion's
//! parser does not know: `WATERMARK FOR col AS col - INTERVAL '...'` inside `CREATE TABLE`.
//!
//! The WATERMARK clause is cut out of the text by overwriting it with spaces, so every other
//! token keeps its line and column and errors point at the text the user wrote.

use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Statement, Value};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::error::SqlError;

/// A declared watermark: event time is `column`, the watermark trails it by `delay_ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkDecl {
    pub column: String,
    pub delay_ns: i64,
    pub line: u64,
    pub col: u64,
}

/// One statement of a script, parsed, with its tokens (for locating constructs in errors).
#[derive(Debug, Clone)]
pub struct ScriptStatement {
    pub statement: Statement,
    pub tokens: Vec<TokenWithSpan>,
    pub watermark: Option<WatermarkDecl>,
}

impl ScriptStatement {
    /// Position of the statement's first token.
    pub fn start(&self) -> (u64, u64) {
        self.tokens
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| (t.span.start.line, t.span.start.column))
            .unwrap_or((1, 1))
    }

    /// Position of the first word `name` (case-insensitive; a quoted word must match exactly).
    pub fn find_word(&self, name: &str) -> Option<(u64, u64)> {
        self.tokens
            .iter()
            .find(|t| match &t.token {
                Token::Word(w) if w.quote_style.is_some() => w.value == name,
                Token::Word(w) => w.value.eq_ignore_ascii_case(name),
                _ => false,
            })
            .map(|t| (t.span.start.line, t.span.start.column))
    }

    /// `e` at the construct it names when that can be found in this statement (an unknown
    /// column), else at the statement's start.
    pub fn locate(&self, e: SqlError) -> SqlError {
        let named = crate::error::unknown_column(&e.message).and_then(|n| self.find_word(n));
        e.or_at(named.or(Some(self.start())))
    }

    /// Position of the first occurrence of keyword sequence `words` (e.g. `["ORDER", "BY"]`),
    /// skipping those inside `OVER (...)` when `outside_over` is set.
    pub fn find_keywords(&self, words: &[&str], outside_over: bool) -> Option<(u64, u64)> {
        let toks: Vec<&TokenWithSpan> = self
            .tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        let mut over_depth: Option<usize> = None;
        let mut depth = 0usize;
        for i in 0..toks.len() {
            match &toks[i].token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth = depth.saturating_sub(1);
                    if over_depth.is_some_and(|d| depth < d) {
                        over_depth = None;
                    }
                }
                Token::Word(w) if w.keyword == Keyword::OVER && outside_over => {
                    over_depth = Some(depth + 1);
                }
                _ => {}
            }
            if over_depth.is_some() && outside_over {
                continue;
            }
            let matches = words.iter().enumerate().all(|(k, word)| {
                toks.get(i + k).is_some_and(
                    |t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case(word)),
                )
            });
            if matches {
                return Some((toks[i].span.start.line, toks[i].span.start.column));
            }
        }
        None
    }

    /// Position of the first call of function `name`.
    pub fn find_call(&self, name: &str) -> Option<(u64, u64)> {
        let toks: Vec<&TokenWithSpan> = self
            .tokens
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        toks.windows(2)
            .find_map(|w| match (&w[0].token, &w[1].token) {
                (Token::Word(word), Token::LParen) if word.value.eq_ignore_ascii_case(name) => {
                    Some((w[0].span.start.line, w[0].span.start.column))
                }
                _ => None,
            })
    }
}

/// Parses a script into statements.
pub fn parse_script(sql: &str) -> Result<Vec<ScriptStatement>, SqlError> {
    let dialect = GenericDialect {};
    let tokenize = |text: &str| {
        Tokenizer::new(&dialect, text)
            .tokenize_with_location()
            .map_err(|e| {
                SqlError::at(
                    format!("syntax error: {}", e.message),
                    e.location.line,
                    e.location.column,
                )
            })
    };
    // Cut WATERMARK clauses out of the text, then tokenize again.
    let (text, watermarks) = cut_watermarks(sql, &tokenize(sql)?)?;
    let tokens = tokenize(&text)?;
    let mut out = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let flush = |current: &mut Vec<TokenWithSpan>,
                 out: &mut Vec<ScriptStatement>|
     -> Result<(), SqlError> {
        let toks = std::mem::take(current);
        if toks.iter().all(|t| matches!(t.token, Token::Whitespace(_))) {
            return Ok(());
        }
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(toks.clone());
        let statement = parser.parse_statement()?;
        if let Err(e) = crate::limits::check_statement(&statement, &Default::default()) {
            let start = toks
                .iter()
                .find(|t| !matches!(t.token, Token::Whitespace(_)))
                .map(|t| t.span.start)
                .unwrap_or(Location { line: 1, column: 1 });
            return Err(SqlError::at(e.message, start.line, start.column));
        }
        if parser.peek_token().token != Token::EOF {
            let t = parser.peek_token();
            return Err(SqlError::at(
                format!(
                    "syntax error: unexpected '{}' after the end of a statement (missing ';'?)",
                    t.token
                ),
                t.span.start.line,
                t.span.start.column,
            ));
        }
        let first = toks
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .map(|t| t.span.start);
        let watermark = first.and_then(|start| {
            let end = toks.last().map(|t| t.span.end).unwrap_or(start);
            watermarks
                .iter()
                .find(|w| loc_in(w.line, w.col, start, end))
                .cloned()
        });
        out.push(ScriptStatement {
            statement,
            tokens: toks,
            watermark,
        });
        Ok(())
    };
    for t in tokens {
        if t.token == Token::SemiColon {
            flush(&mut current, &mut out)?;
        } else {
            current.push(t);
        }
    }
    flush(&mut current, &mut out)?;
    Ok(out)
}

fn loc_in(line: u64, col: u64, start: Location, end: Location) -> bool {
    (line, col) >= (start.line, start.column) && (line, col) <= (end.line, end.column)
}

/// Byte offset of a (line, column) location, columns counted in characters.
fn offset_of(sql: &str, line_starts: &[usize], loc: Location) -> usize {
    let ls = line_starts
        .get((loc.line as usize).saturating_sub(1))
        .copied()
        .unwrap_or(sql.len());
    sql[ls..]
        .char_indices()
        .nth((loc.column as usize).saturating_sub(1))
        .map(|(i, _)| ls + i)
        .unwrap_or(sql.len())
}

fn cut_watermarks(
    sql: &str,
    tokens: &[TokenWithSpan],
) -> Result<(String, Vec<WatermarkDecl>), SqlError> {
    let mut line_starts = vec![0];
    line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let sig: Vec<(usize, &TokenWithSpan)> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut text = sql.as_bytes().to_vec();
    let mut decls = Vec::new();
    let is_word = |t: &Token, w: &str| matches!(t, Token::Word(x) if x.value.eq_ignore_ascii_case(w) && x.quote_style.is_none());
    let mut k = 0;
    while k < sig.len() {
        let (_, t) = sig[k];
        if !(is_word(&t.token, "WATERMARK")
            && sig
                .get(k + 1)
                .is_some_and(|(_, n)| is_word(&n.token, "FOR")))
        {
            k += 1;
            continue;
        }
        let (line, col) = (t.span.start.line, t.span.start.column);
        let err = |m: &str| SqlError::at(m.to_string(), line, col);
        let column = match sig.get(k + 2).map(|(_, t)| &t.token) {
            Some(Token::Word(w)) => w.value.clone(),
            _ => {
                return Err(err(
                    "WATERMARK FOR must name a column: WATERMARK FOR ts AS ts - INTERVAL '5' SECOND",
                ));
            }
        };
        if !sig.get(k + 3).is_some_and(|(_, t)| is_word(&t.token, "AS")) {
            return Err(err("expected AS after WATERMARK FOR <column>"));
        }
        // The expression runs to the ',' or ')' that closes the clause.
        let mut depth = 0i32;
        let mut end = k + 4;
        while end < sig.len() {
            match sig[end].1.token {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => break,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => break,
                _ => {}
            }
            end += 1;
        }
        if end == k + 4 {
            return Err(err("WATERMARK FOR <column> AS needs an expression"));
        }
        let expr_start = offset_of(sql, &line_starts, sig[k + 4].1.span.start);
        let expr_end = offset_of(sql, &line_starts, sig[end - 1].1.span.end);
        let expr_text = &sql[expr_start..expr_end];
        let delay_ns = watermark_delay(&column, expr_text).map_err(|m| {
            let s = sig[k + 4].1.span.start;
            SqlError::at(m, s.line, s.column)
        })?;
        // Blank from the comma before the clause (if any) to the end of the expression.
        let mut blank_from = offset_of(sql, &line_starts, t.span.start);
        if k > 0 && sig[k - 1].1.token == Token::Comma {
            blank_from = offset_of(sql, &line_starts, sig[k - 1].1.span.start);
        }
        let mut blank_to = expr_end;
        // A clause first in the list takes its following comma.
        let prev_is_lparen = k > 0 && sig[k - 1].1.token == Token::LParen;
        if prev_is_lparen && sig.get(end).is_some_and(|(_, t)| t.token == Token::Comma) {
            blank_to = offset_of(sql, &line_starts, sig[end].1.span.end);
        }
        for b in &mut text[blank_from..blank_to] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
        // Empty column list left behind: blank the parentheses too.
        if prev_is_lparen && sig.get(end).is_some_and(|(_, t)| t.token == Token::RParen) {
            let lp = offset_of(sql, &line_starts, sig[k - 1].1.span.start);
            let rp = offset_of(sql, &line_starts, sig[end].1.span.start);
            text[lp] = b' ';
            text[rp] = b' ';
        }
        decls.push(WatermarkDecl {
            column,
            delay_ns,
            line,
            col,
        });
        k = end;
    }
    // Only ASCII bytes were overwritten (with spaces) and multi-byte characters are either kept
    // whole or fully blanked, so the text stays valid UTF-8.
    let text = String::from_utf8(text)
        .map_err(|_| SqlError::new("internal: invalid text after WATERMARK removal"))?;
    Ok((text, decls))
}

/// `col` or `col - INTERVAL '...'`: the delay in nanoseconds.
fn watermark_delay(column: &str, expr: &str) -> Result<i64, String> {
    let dialect = GenericDialect {};
    let parsed = Parser::new(&dialect)
        .try_with_sql(expr)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("invalid WATERMARK expression: {e}"))?;
    let usage = format!(
        "WATERMARK expressions have the form `{column}` or `{column} - INTERVAL '5' SECOND`"
    );
    let is_col =
        |e: &SqlExpr| matches!(e, SqlExpr::Identifier(i) if i.value.eq_ignore_ascii_case(column));
    match &parsed {
        e if is_col(e) => Ok(0),
        SqlExpr::BinaryOp {
            left,
            op: datafusion::sql::sqlparser::ast::BinaryOperator::Minus,
            right,
        } if is_col(left) => match right.as_ref() {
            SqlExpr::Interval(iv) => {
                let value = match iv.value.as_ref() {
                    SqlExpr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) | Value::Number(s, _) => s.clone(),
                        _ => return Err(usage),
                    },
                    _ => return Err(usage),
                };
                let text = match &iv.leading_field {
                    Some(f) => format!("{value} {f}"),
                    None => value,
                };
                let v = arrow::compute::kernels::cast_utils::parse_interval_month_day_nano(&text)
                    .map_err(|e| format!("invalid WATERMARK interval '{text}': {e}"))?;
                if v.months != 0 {
                    return Err("a WATERMARK delay must not be in months or years".into());
                }
                let ns = v.days as i64 * 86_400_000_000_000 + v.nanoseconds;
                if ns < 0 {
                    return Err("a WATERMARK delay must not be negative".into());
                }
                Ok(ns)
            }
            _ => Err(usage),
        },
        _ => Err(usage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_cut_and_positions_kept() {
        let sql = "CREATE TABLE posts (\n  did TEXT,\n  ts TIMESTAMP,\n  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND\n) WITH (connector = 'replay');\nSELECT 1;";
        let stmts = parse_script(sql).unwrap();
        assert_eq!(stmts.len(), 2);
        let w = stmts[0].watermark.clone().unwrap();
        assert_eq!(
            (w.column.as_str(), w.delay_ns, w.line, w.col),
            ("ts", 5_000_000_000, 4, 3)
        );
        assert_eq!(stmts[1].start(), (6, 1));
        let Statement::CreateTable(ct) = &stmts[0].statement else {
            panic!()
        };
        assert_eq!(ct.columns.len(), 2);
    }

    #[test]
    fn watermark_alone_leaves_no_columns() {
        let sql = "CREATE TABLE posts (WATERMARK FOR event_time AS event_time - INTERVAL '10 seconds') WITH (connector = 'x')";
        let stmts = parse_script(sql).unwrap();
        let Statement::CreateTable(ct) = &stmts[0].statement else {
            panic!()
        };
        assert!(ct.columns.is_empty());
        assert_eq!(
            stmts[0].watermark.as_ref().unwrap().delay_ns,
            10_000_000_000
        );
    }

    #[test]
    fn bad_watermark_expression_is_positioned() {
        let e = parse_script(
            "CREATE TABLE t (ts TIMESTAMP,\n WATERMARK FOR ts AS ts * 2) WITH (connector='x')",
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(22)), "{e}");
    }

    #[test]
    fn syntax_errors_are_positioned() {
        let e = parse_script("SELECT 1;\nSELEC x FROM t").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }
}
