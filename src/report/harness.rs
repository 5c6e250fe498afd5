//! Where the per-layer suite writes each case's report, and writing it without ever failing a
//! test: `target/layercheck-reports/<case>/` (the case name with `::` replaced by `_`), or under
//! the folder named by `LAYERCHECK_REPORT_DIR`.

use std::path::{Path, PathBuf};

use super::{write_case_report, ReportError, MARKDOWN_FILE};
use crate::harness::evaluate::CaseOutcome;
use crate::harness::matrix::Margins;

/// The variable naming the folder under which case folders go (instead of
/// `target/layercheck-reports`).
pub const REPORT_DIR_VAR: &str = "LAYERCHECK_REPORT_DIR";

/// The report folder of the case named `case`.
pub fn case_report_dir(case: &str) -> Result<PathBuf, ReportError> {
    let root = match std::env::var_os(REPORT_DIR_VAR) {
        Some(v) if v.is_empty() => return Err(ReportError::Folder { problem: format!("{REPORT_DIR_VAR} is set but empty") }),
        Some(v) => PathBuf::from(v),
        None => target_dir()?.join("layercheck-reports"),
    };
    Ok(root.join(case.replace("::", "_")))
}

/// Cargo's target folder of the running executable: the nearest ancestor holding `CACHEDIR.TAG`
/// (cargo writes one there), else three levels up (`target/<profile>/deps/<binary>`).
fn target_dir() -> Result<PathBuf, ReportError> {
    let exe = std::env::current_exe().map_err(|e| ReportError::Folder { problem: format!("cannot locate the running executable to find the target folder: {e}") })?;
    if let Some(dir) = exe.ancestors().skip(1).find(|d| d.join("CACHEDIR.TAG").is_file()) {
        return Ok(dir.to_path_buf());
    }
    exe.ancestors().nth(3).map(Path::to_path_buf).ok_or_else(|| ReportError::Folder { problem: format!("{} is not inside a cargo target folder", exe.display()) })
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
