//! The CSV reading the CSV formats share: a header row, named columns matched without regard
//! to case or surrounding spaces, and each record's line number for error messages.

use super::{ImportError, bad};

pub(crate) struct Table {
    headers: Vec<String>,
    pub rows: Vec<Row>,
}

pub(crate) struct Row {
    pub line: usize,
    cells: Vec<String>,
}

impl Table {
    /// Reads the whole file; a record with a different number of cells than the header, or a
    /// broken quote, fails naming its line.
    pub fn read(text: &str) -> Result<Self, ImportError> {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(false).from_reader(text.as_bytes());
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| bad(format!("line 1: not a CSV header ({})", csv_reason(&e))))?
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                bad(format!("line {line}: {}", csv_reason(&e)))
            })?;
            let line = record.position().map_or(0, |p| p.line()) as usize;
            if record.iter().all(|c| c.trim().is_empty()) {
                continue;
            }
            rows.push(Row { line, cells: record.iter().map(str::to_owned).collect() });
        }
        Ok(Self { headers, rows })
    }

    /// The index of the first header among `names` (lowercase).
    pub fn column(&self, names: &[&str]) -> Option<usize> {
        names.iter().find_map(|n| self.headers.iter().position(|h| h == n))
    }

    /// Like [`Table::column`] but required: names the format and the header it expected.
    pub fn require(&self, format: &str, names: &[&str]) -> Result<usize, ImportError> {
        self.column(names).ok_or_else(|| {
            bad(format!(
                "line 1: not a {format} export: no {:?} column (the header has {})",
                names[0],
                self.headers.join(", ")
            ))
        })
    }
}

impl Row {
    pub fn get(&self, col: Option<usize>) -> &str {
        col.and_then(|c| self.cells.get(c)).map_or("", String::as_str)
    }
}

/// The csv crate's error without its own position prefix (we say the line ourselves), and
/// never the record's content.
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} cells where the header has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".into(),
        _ => "malformed CSV".into(),
    }
}
