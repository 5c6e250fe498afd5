//! Whether a run verifies golden files (the default) or regenerates them, from
//! `LAYERCHECK_UPDATE_GOLDEN`; regeneration is refused under CI.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::test_name::CaseId;

/// The environment variable that turns on golden regeneration.
pub const UPDATE_VAR: &str = "LAYERCHECK_UPDATE_GOLDEN";

/// Whether golden files are verified (the default) or regenerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    Verify,
    Update,
}

/// An update setting that cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UpdateError {
    #[error("refusing to regenerate golden files under CI ({UPDATE_VAR} is set and so is CI)\n(hint: regenerate them on a workstation and commit them)")]
    UnderCi,
    #[error("{UPDATE_VAR}={0} is not understood\n(hint: use {UPDATE_VAR}=1 to regenerate golden files, or leave it unset)")]
    BadValue(String),
}

impl UpdateMode {
    /// Reads [`UPDATE_VAR`]: unset, `0` or `no` verify; `1` or `yes` update (refused when `CI` is set).
    pub fn from_env() -> Result<Self, UpdateError> {
        Self::parse(std::env::var(UPDATE_VAR).ok().as_deref(), std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0"))
    }

    /// [`UpdateMode::from_env`] on given values.
    pub fn parse(value: Option<&str>, ci: bool) -> Result<Self, UpdateError> {
        match value {
            None | Some("") | Some("0") | Some("no") => Ok(UpdateMode::Verify),
            Some("1") | Some("yes") if ci => Err(UpdateError::UnderCi),
            Some("1") | Some("yes") => Ok(UpdateMode::Update),
            Some(other) => Err(UpdateError::BadValue(other.to_string())),
        }
    }
}

/// The variable naming the run a process belongs to; the suite's test processes set it for the
/// `layercheck` processes they start.
pub const RUN_ID_VAR: &str = "LAYERCHECK_RUN_ID";

/// The run this process belongs to, so that a golden file shared by several cases is regenerated
/// once per update run: [`RUN_ID_VAR`], else nextest's `NEXTEST_RUN_ID`, else one made for this
/// process (from its id and start time).
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let set = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        set(RUN_ID_VAR).or_else(|| set("NEXTEST_RUN_ID")).unwrap_or_else(|| {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            format!("process-{}-{nanos}", std::process::id())
        })
    })
}

/// The command that regenerates the golden files of `case`.
pub fn regenerate_command(case: &CaseId) -> String {
    format!("{UPDATE_VAR}=1 cargo test --test layers -- '{case}::'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_mode_is_explicit_and_refused_under_ci() {
        assert_eq!(UpdateMode::parse(None, false).unwrap(), UpdateMode::Verify);
        assert_eq!(UpdateMode::parse(Some("0"), true).unwrap(), UpdateMode::Verify);
        assert_eq!(UpdateMode::parse(Some("1"), false).unwrap(), UpdateMode::Update);
        assert!(matches!(UpdateMode::parse(Some("1"), true), Err(UpdateError::UnderCi)));
        let err = UpdateMode::parse(Some("overwrite"), false).unwrap_err().to_string();
        assert!(err.contains("LAYERCHECK_UPDATE_GOLDEN=overwrite is not understood"), "{err}");
    }
}
