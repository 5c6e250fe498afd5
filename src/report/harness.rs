//! Where the per-layer suite writes each case's report, and writing it without ever failing a
//! test: `target/layercheck-reports/<case>/` (the case name with `::` replaced by `_`), or under
//! the folder named by `LAYERCHECK_REPORT_DIR`.

use std::path::PathBuf;

use super::{write_case_report, ReportError, MARKDOWN_FILE};
use layercheck_suite::outcome::CaseOutcome;
use layercheck_suite::matrix::Margins;

pub use layercheck_suite::report_dir::REPORT_DIR_VAR;

/// The report folder of the case named `case`.
pub fn case_report_dir(case: &str) -> Result<PathBuf, ReportError> {
    layercheck_suite::report_dir::case_report_dir(case).map_err(|problem| ReportError::Folder { problem })
}

/// Writes the report of a harness case; prints where it went, or a warning (never a failure:
/// a test's verdict does not depend on its report). Returns the report folder when written.
pub fn write_harness_report(outcome: &CaseOutcome, margins: &Margins) -> Option<PathBuf> {
    let write = || case_report_dir(&outcome.case).and_then(|dir| write_case_report(outcome, margins, &dir).map(|_| dir));
    // A bug in drawing must not fail the case's tests either.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(write))
        .unwrap_or_else(|_| Err(ReportError::Plot { what: "the report", message: "it panicked (see the message above)".into() }));
    match result {
        Ok(dir) => {
            eprintln!("layercheck: report of {}: {}", outcome.case, dir.join(MARKDOWN_FILE).display());
            Some(dir)
        }
        Err(e) => {
            eprintln!("warning: layercheck could not write the report of {}: {e}", outcome.case);
            None
        }
    }
}
