//! stdout is data, stderr is talk. Lists render as an aligned table on a
//! terminal, as tab-separated lines without a header otherwise (stable for
//! scripts), or as `--format` says: `table` (also into a pipe), `plain`,
//! `json`, `yaml`.

use std::io::{IsTerminal, Write};

use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table with a header, also into a pipe or file
    Table,
    /// Tab-separated lines without a header (the default off a terminal)
    Plain,
    /// JSON, for scripts
    Json,
    /// YAML
    Yaml,
}

/// `--format` for every list.
#[derive(Debug, Clone, clap::Args)]
pub struct FormatArg {
    /// Output format [default: table on a terminal, plain otherwise]
    #[arg(
        long = "format",
        value_enum,
        value_name = "FORMAT",
        env = "INFRA_FORMAT"
    )]
    pub chosen: Option<Format>,
}

impl FormatArg {
    /// The format asked for, else a table on a terminal and plain lines
    /// otherwise.
    pub fn format(&self) -> Format {
        self.chosen.unwrap_or_else(Format::default_here)
    }
}

impl Format {
    /// A table on a terminal, plain lines otherwise.
    pub fn default_here() -> Format {
        if stdout_is_tty() {
            Format::Table
        } else {
            Format::Plain
        }
    }
}

pub fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

/// Writes a serializable value as JSON or YAML.
pub fn data<T: Serialize>(format: Format, value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Yaml => {
            let text = serde_saphyr::to_string(value)?;
            out.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
        _ => {
            serde_json::to_writer_pretty(&mut out, value)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Writes a list: `items` for JSON/YAML, `rows` under `headers` otherwise.
pub fn list<T: Serialize>(
    format: Format,
    items: &[T],
    headers: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        Format::Table => table(headers, rows.into_iter().collect()),
        Format::Plain => plain(rows.into_iter().collect()),
        _ => data(format, &items),
    }
}

/// Tab-separated lines without a header: stable for scripts.
pub fn plain(rows: Vec<Vec<String>>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for row in rows {
        writeln!(out, "{}", row.join("\t"))?;
    }
    out.flush()?;
    Ok(())
}

/// An aligned table under `headers`; `(none)` on stderr when empty.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if rows.is_empty() {
        drop(out);
        eprintln!("(none)");
        return Ok(());
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    writeln!(
        out,
        "{}",
        line(headers.iter().map(|h| h.to_string()).collect())
    )?;
    for row in rows {
        writeln!(out, "{}", line(row))?;
    }
    out.flush()?;
    Ok(())
}

/// Prints one line of data to stdout.
pub fn line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Shortens an RFC 3339 time for tables: `2026-11-22 18:16`.
pub fn short_time(t: &str) -> String {
    if t.len() >= 16 {
        t[..16].replace('T', " ")
    } else {
        t.to_string()
    }
}
