//! How the CLI prints: aligned tables for people (the default), JSON lines for scripts
//! (`--json`). Stdout carries results only; diagnostics and progress go to stderr.

use std::io::{self, Write};

use chorus_client::Timestamp;
use serde::Serialize;
use unicode_width::UnicodeWidthStr;

/// Rows under a header, each column as wide as its widest cell, two spaces apart. The
/// last column is not padded (free text goes there).
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len());
        self.rows.push(cells);
    }

    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.width()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.width());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = widths[i].saturating_sub(cell.width()) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }

    /// Writes the table to stdout.
    pub fn print(&self) -> anyhow::Result<()> {
        let mut out = io::stdout().lock();
        self.write(&mut out)?;
        Ok(out.flush()?)
    }
}

/// Text someone else wrote, made safe to show in a terminal: control characters
/// (newlines, tabs, escape sequences that could restyle or rewrite the screen) and the
/// invisible bidirectional overrides are shown escaped (`\n`, `\u{1b}`, `\u{202e}`).
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `2026-05-01 09:30:00` (UTC), or `-` for none.
pub fn time(ts: Option<Timestamp>) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let Some(ts) = ts else {
        return "-".to_owned();
    };
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.0) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| ts.0.to_string())
}

/// `yes` / empty: a flag column reads best when only the exceptions stand out.
pub fn flag(on: bool, text: &str) -> String {
    if on { text.to_owned() } else { String::new() }
}

/// Comma-separated ids, or `-` for none.
pub fn ids<T: std::fmt::Display>(ids: &[T]) -> String {
    if ids.is_empty() {
        return "-".to_owned();
    }
    ids.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
}

/// One JSON line to stdout. `writeln!` rather than `println!` so a closed pipe
/// (`chorus tail | head`) is an error, not a panic.
pub fn json_line(value: &impl Serialize) -> anyhow::Result<()> {
    let line = serde_json::to_string(value)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    Ok(out.flush()?)
}

/// A line of text to stdout.
pub fn line(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_by_display_width_and_the_last_is_not_padded() {
        let mut table = Table::new(&["ID", "NAME", "TEXT"]);
        table.row(vec!["1".into(), "ünïcödé".into(), "hi".into()]);
        table.row(vec!["22".into(), "日本".into(), String::new()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8(out).unwrap_or_default();
        assert_eq!(
            text, "ID  NAME     TEXT\n1   ünïcödé  hi\n22  日本\n",
            "{text}"
        );
    }

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped() {
        assert_eq!(clean("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(clean("\u{1b}[2Jx"), "\\u{1b}[2Jx");
        assert_eq!(clean("abc\u{202e}def"), "abc\\u{202e}def");
        assert_eq!(clean("héllo 👋"), "héllo 👋");
    }

    #[test]
    fn times_are_utc_seconds() {
        assert_eq!(time(Some(Timestamp(0))), "1970-01-01 00:00:00");
        assert_eq!(
            time(Some(Timestamp(1_700_000_000_123))),
            "2023-11-14 22:13:20"
        );
        assert_eq!(time(None), "-");
    }
}
