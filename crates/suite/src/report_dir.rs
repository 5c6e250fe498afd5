//! Where each case's report goes: `target/layercheck-reports/<case>/` (the case name with `::`
//! replaced by `_`), or under the folder named by `LAYERCHECK_REPORT_DIR`. Both the test
//! processes (which print it) and `layercheck` (which writes it) find the same folder.

use std::path::{Path, PathBuf};

/// The variable naming the folder under which case folders go (instead of
/// `target/layercheck-reports`).
pub const REPORT_DIR_VAR: &str = "LAYERCHECK_REPORT_DIR";

/// The report folder of the case named `case`, or why there is none.
pub fn case_report_dir(case: &str) -> Result<PathBuf, String> {
    let root = match std::env::var_os(REPORT_DIR_VAR) {
        Some(v) if v.is_empty() => return Err(format!("{REPORT_DIR_VAR} is set but empty")),
        Some(v) => PathBuf::from(v),
        None => target_dir()?.join("layercheck-reports"),
    };
    Ok(root.join(case.replace("::", "_")))
}

/// Cargo's target folder of the running executable: the nearest ancestor holding `CACHEDIR.TAG`
/// (cargo writes one there), else three levels up (`target/<profile>/deps/<binary>`).
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate the running executable to find the target folder: {e}"))?;
    if let Some(dir) = exe.ancestors().skip(1).find(|d| d.join("CACHEDIR.TAG").is_file()) {
        return Ok(dir.to_path_buf());
    }
    exe.ancestors().nth(3).map(Path::to_path_buf).ok_or_else(|| format!("{} is not inside a cargo target folder", exe.display()))
}
