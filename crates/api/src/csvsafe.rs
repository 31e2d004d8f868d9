//! CSV that a spreadsheet cannot run: every cell of the journal CSV and of the legal register
//! goes through [`neutralise`] (OWASP "CSV injection"). A cell starting with `=`, `+`, `-`,
//! `@`, a tab or a carriage return is a formula to Excel and LibreOffice (`=HYPERLINK(…)`,
//! `=cmd|…`): it is prefixed with a single quote, which spreadsheets show as text. Login names
//! typed by strangers, procedures, reasons and requesters are all attacker-chosen text.

use std::borrow::Cow;

/// The cell as a spreadsheet will show it as text.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

/// A CSV writer whose every cell is [`neutralise`]d (same `write_record` as `csv::Writer`).
pub struct SafeCsv<W: std::io::Write> {
    inner: csv::Writer<W>,
}

impl<W: std::io::Write> SafeCsv<W> {
    pub fn from_writer(w: W) -> Self {
        SafeCsv {
            inner: csv::Writer::from_writer(w),
        }
    }

    pub fn write_record<I, T>(&mut self, record: I) -> csv::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.inner.write_record(
            record
                .into_iter()
                .map(|c| neutralise(c.as_ref()).into_owned()),
        )
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    pub fn into_inner(self) -> Result<W, Box<csv::IntoInnerError<csv::Writer<W>>>> {
        self.inner.into_inner().map_err(Box::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_quoted_and_others_kept() {
        for f in ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(f), format!("'{f}"));
        }
        for ok in [
            "",
            "alice",
            "2026/0042",
            "réquisition",
            "{\"a\":1}",
            "'quoted",
        ] {
            assert_eq!(neutralise(ok), ok);
        }
        let mut w = SafeCsv::from_writer(Vec::new());
        w.write_record(["=HYPERLINK(\"http://x\")", "plain"])
            .unwrap();
        let out = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(out, "\"'=HYPERLINK(\"\"http://x\"\")\",plain\n");
    }
}
