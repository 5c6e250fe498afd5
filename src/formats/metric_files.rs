//! Finding a folder's metric files the way `get_thresholds.py` does, in both formats.
//!
//! `get_thresholds.py` finds files with `glob.glob(os.path.join(file_base,
//! f"{model}*{metric_name}*.csv"))` and names a file's layer `file.split("--")[-1]` with
//! `.{metric_name}` and `.csv` removed. [`glob_files`] matches names the same way (`*` is any
//! run of characters; glob characters inside the model name are taken literally, where Python
//! would interpret them) and [`python_layer_name`] applies the same rule. Python returns files in
//! directory order, which differs between file systems; we sort names naturally
//! ([`natural_cmp`]: digit runs compare as numbers, so `layers2` < `layers10`), which makes the
//! output deterministic.
//!
//! Compact files ([`super::compact`]) of a model are `{model}*.layercheck.safetensors`.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use super::compact::SUFFIX as COMPACT_SUFFIX;

/// Why a folder could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum MetricFilesError {
    /// The folder could not be read.
    #[error("cannot list {path}: {source}\n(hint: --file_base must be the folder that holds the metric files)")]
    ReadDir { path: PathBuf, source: std::io::Error },
}

/// Plain files of `dir` whose names match `{model}*{middle}*{suffix}`, naturally sorted.
pub fn glob_files(dir: &Path, model: &str, middle: &str, suffix: &str) -> Result<Vec<PathBuf>, MetricFilesError> {
    let mut out: Vec<PathBuf> = list_files(dir)?
        .into_iter()
        .filter(|(name, _)| matches_pattern(name, model, middle, suffix))
        .map(|(_, path)| path)
        .collect();
    out.sort_by(|a, b| natural_cmp(&file_name(a), &file_name(b)));
    Ok(out)
}

/// The compact files of `model` in `dir` (`{model}*.layercheck.safetensors`), naturally sorted.
pub fn compact_files(dir: &Path, model: &str) -> Result<Vec<PathBuf>, MetricFilesError> {
    glob_files(dir, model, "", COMPACT_SUFFIX)
}

/// Whether `name` matches the glob pattern `{model}*{middle}*{suffix}`.
pub fn matches_pattern(name: &str, model: &str, middle: &str, suffix: &str) -> bool {
    name.len() >= model.len() + middle.len() + suffix.len()
        && name.starts_with(model)
        && name.ends_with(suffix)
        && name[model.len()..name.len() - suffix.len()].contains(middle)
}

/// `get_thresholds.py`'s layer name of a metric file: the part after the last `--`, with every
/// `.{metric_name}` and `.csv` removed (`.iter-N` is still there).
pub fn python_layer_name(file_name: &str, metric_name: &str) -> String {
    let last = file_name.rsplit("--").next().unwrap_or(file_name);
    last.replace(&format!(".{metric_name}"), "").replace(".csv", "")
}

/// The part of a seed CSV file name before its last `--` (the case prefix), if any.
pub fn csv_prefix(file_name: &str) -> Option<&str> {
    file_name.rsplit_once("--").map(|(prefix, _)| prefix)
}

/// The file name of `path` as a string (lossy).
pub fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn list_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, MetricFilesError> {
    let err = |source| MetricFilesError::ReadDir { path: dir.to_path_buf(), source };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let path = entry.path();
        if path.is_file() {
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_string(), path));
            }
        }
    }
    Ok(out)
}

/// Natural order: runs of ASCII digits compare by value (then by length, so `07` after `7`),
/// everything else byte by byte.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let si = i;
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let (da, db) = (trim_zeros(&a[si..i]), trim_zeros(&b[sj..j]));
            let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db)).then_with(|| (i - si).cmp(&(j - sj)));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let k = d.iter().take_while(|&&c| c == b'0').count();
    &d[k..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_python_glob() {
        let m = "ibm-granite--granite-3.3-8b-instruct";
        let f = format!("{m}_max-new-tokens-128_batch-size-1_seq-length-64_dtype-float16--model.base_model.layers7.ln.abs_diff.csv");
        assert!(matches_pattern(&f, m, "abs_diff", ".csv"));
        assert!(!matches_pattern(&f, m, "cos_sim", ".csv"));
        assert!(!matches_pattern(&f, "other", "abs_diff", ".csv"));
        assert!(matches_pattern("mabs_diff.csv", "m", "abs_diff", ".csv"));
        assert!(!matches_pattern("m.csv", "m", "", ".csv.csv"));
        assert_eq!(python_layer_name(&f, "abs_diff"), "model.base_model.layers7.ln");
        assert_eq!(python_layer_name("p--model.head.iter-5.cos_sim.csv", "cos_sim"), "model.head.iter-5");
        assert_eq!(csv_prefix(&f).unwrap(), format!("{m}_max-new-tokens-128_batch-size-1_seq-length-64_dtype-float16"));
    }

    #[test]
    fn natural_order_compares_numbers_by_value() {
        let mut v = vec!["layers10.ln", "layers2.ln", "layers1.ln", "layers2.attn", "a", "layers02.ln"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["a", "layers1.ln", "layers2.attn", "layers2.ln", "layers02.ln", "layers10.ln"]);
        assert_eq!(natural_cmp("x.iter-9", "x.iter-10"), Ordering::Less);
        assert_eq!(natural_cmp("same", "same"), Ordering::Equal);
    }

    #[test]
    fn globs_files_only_in_natural_order() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["m_x--l10.abs_diff.csv", "m_x--l9.abs_diff.csv", "m_x--l9.cos_sim.csv", "n_x--l1.abs_diff.csv"] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("m_dir.abs_diff.csv")).unwrap();
        let names: Vec<_> = glob_files(dir.path(), "m", "abs_diff", ".csv").unwrap().iter().map(|p| file_name(p)).collect();
        assert_eq!(names, ["m_x--l9.abs_diff.csv", "m_x--l10.abs_diff.csv"]);
        let err = glob_files(&dir.path().join("missing"), "m", "", ".csv").unwrap_err().to_string();
        assert!(err.contains("hint"), "{err}");
    }
}
