//! Where a benchmark finds its Python side: only through documented variables, never a path of
//! one machine.

/// The Python of `LAYERCHECK_PYTHON`, or `None` with the line to print when it is unset or absent:
/// how to make one (`scripts/setup-python` prints the cached venv's python).
pub fn python_from_env(what: &str) -> Result<String, String> {
    match std::env::var("LAYERCHECK_PYTHON") {
        Ok(p) if !p.is_empty() && std::path::Path::new(&p).exists() => Ok(p),
        Ok(p) if !p.is_empty() => Err(format!("{what} skipped: LAYERCHECK_PYTHON={p} does not exist (hint: export LAYERCHECK_PYTHON=$(scripts/setup-python))")),
        _ => Err(format!("{what} skipped: LAYERCHECK_PYTHON is not set (hint: export LAYERCHECK_PYTHON=$(scripts/setup-python), a cached venv with torch, transformers and fms)")),
    }
}

/// The unpacked aiu-fms-testing-utils wheel of `LAYERCHECK_AIU_PACKAGE`, or the line to print.
#[allow(dead_code)]
pub fn aiu_package_from_env(what: &str) -> Result<String, String> {
    match std::env::var("LAYERCHECK_AIU_PACKAGE") {
        Ok(p) if !p.is_empty() && std::path::Path::new(&p).join("aiu_fms_testing_utils").is_dir() => Ok(p),
        _ => Err(format!(
            "{what} skipped: LAYERCHECK_AIU_PACKAGE is not a folder holding aiu_fms_testing_utils/ (hint: pip download --no-deps aiu-fms-testing-utils==0.9.0 -d /tmp/aiu-pypi && mkdir -p /tmp/aiu-whl && (cd /tmp/aiu-whl && unzip -q /tmp/aiu-pypi/*.whl) && export LAYERCHECK_AIU_PACKAGE=/tmp/aiu-whl; scripts/reference/README.md)"
        )),
    }
}
