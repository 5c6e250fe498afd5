//! A reviewable manifest of every golden file: its provenance, the sha256 of its tensor data
//! (`tensors_sha256`) and, per record, its shape, mean, RMS and max |x| to four significant
//! digits. When golden files are regenerated, this snapshot shows what changed
//! (`cargo insta review`), so that a new reference is accepted on purpose, not by accident. The
//! manifests are what the repository keeps when golden files live elsewhere (README "Golden files
//! outside git"): the golden folder is the matrix's (`LAYERCHECK_GOLDEN_DIR` overrides it), read
//! one record at a time.

use std::fmt::Write;
use std::path::Path;

use layercheck::capture::RecordSource;
use layercheck::capture_reader::CaptureReader;
use layercheck::compute::golden::{manifest_name, MANIFEST_SHA_LINE, TENSORS_SHA256};
use layercheck_suite::matrix::Matrix;
use tch::Kind;

#[test]
fn golden_files_match_their_reviewed_manifest() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = Matrix::from_env(repo).unwrap_or_else(|e| panic!("{e}")).golden_dir;
    let mut files: Vec<_> = walk(&root);
    files.sort();
    assert!(!files.is_empty(), "no golden files under {}", root.display());
    for path in files {
        let capture = CaptureReader::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut manifest = String::new();
        for key in ["model", "target", "mode", "max_new_tokens", "config_sha256", "weights_sha256", "input_ids_sha256"] {
            let _ = writeln!(manifest, "{key}: {}", capture.metadata().get(key).map_or("(none)", String::as_str));
        }
        // What the suite checks a golden file against when the matrix sets manifest_dir; recorded
        // by the golden file itself, and checked against its data here.
        let sha = capture.tensors_sha256().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(capture.metadata().get(TENSORS_SHA256), Some(&sha), "{}: its data does not match its tensors_sha256", path.display());
        let _ = writeln!(manifest, "{MANIFEST_SHA_LINE}{sha}");
        for name in capture.keys() {
            let t = capture.tensor(name).unwrap_or_else(|e| panic!("{e}")).expect("a listed record").to_kind(Kind::Double);
            let stat = |x: tch::Tensor| format!("{:.4e}", x.double_value(&[]));
            let _ = writeln!(manifest, "{name} {:?} mean {} rms {} max|x| {}", t.size(), stat(t.mean(Kind::Double)), stat(t.square().mean(Kind::Double).sqrt()), stat(t.abs().max()));
        }
        let name = manifest_name(path.strip_prefix(&root).unwrap());
        let name = name.strip_suffix(".snap").unwrap();
        insta::with_settings!({snapshot_path => "../golden/manifests", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(name, manifest);
        });
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "safetensors") {
            out.push(p);
        }
    }
    out
}
