//! A reviewable manifest of every golden file: per record, its shape, mean, RMS and max |x| to
//! four significant digits. When golden files are regenerated, this snapshot shows what changed
//! (`cargo insta review`), so that a new reference is accepted on purpose, not by accident.

use std::fmt::Write;
use std::path::Path;

use layercheck::capture::Capture;
use tch::Kind;

#[test]
fn golden_files_match_their_reviewed_manifest() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden");
    let mut files: Vec<_> = walk(&root);
    files.sort();
    assert!(!files.is_empty(), "no golden files under {}", root.display());
    for path in files {
        let capture = Capture::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut manifest = String::new();
        for key in ["model", "target", "mode", "max_new_tokens", "config_sha256", "weights_sha256", "input_ids_sha256"] {
            let _ = writeln!(manifest, "{key}: {}", capture.metadata.get(key).map_or("(none)", String::as_str));
        }
        for name in &capture.keys {
            let t = capture.tensors[name].to_kind(Kind::Double);
            let stat = |x: tch::Tensor| format!("{:.4e}", x.double_value(&[]));
            let _ = writeln!(manifest, "{name} {:?} mean {} rms {} max|x| {}", t.size(), stat(t.mean(Kind::Double)), stat(t.square().mean(Kind::Double).sqrt()), stat(t.abs().max()));
        }
        let name = path.strip_prefix(&root).unwrap().to_string_lossy().replace(['/', '.'], "_");
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
