//! The golden store: the CPU float32 reference capture of each case, one file per case under
//! `golden/{model}/`, with the provenance that tells a stale golden from a numeric failure.
//!
//! A golden file is a capture file (see `src/capture.rs`) of the reference target, inputs
//! included, plus metadata `weights_sha256`, `input_ids_sha256` and `tensors_sha256` (the sha256
//! of its tensors' contents, [`crate::tensor_file::tensors_sha256`]). It is shared by every target
//! and feed of the same (model, mode, batch, seq, new tokens). Files are written atomically, and
//! only in update mode (`LAYERCHECK_UPDATE_GOLDEN=1`), which is refused under CI; a reference run
//! with NaN or inf in any tensor is refused, not written.
//!
//! Loading checks, in this order: the data against `tensors_sha256` (corrupt), the metadata
//! `target`, `mode`, `max_new_tokens` and `attention_mask` against the case (a golden made by
//! another run cannot pass as the reference), then the provenance (stale).

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tch::Tensor;

use layercheck_suite::matrix::GOLDEN_DIR_VAR;
use layercheck_suite::test_name::CaseId;
pub use layercheck_suite::update::{UpdateMode, UPDATE_VAR};
use crate::capture::{Capture, CaptureError, Mode, RecordSource};
use crate::capture_reader::CaptureReader;

/// What a golden file must have been made from to be current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub config_sha256: String,
    pub weights_sha256: String,
    pub input_ids_sha256: String,
}

impl Provenance {
    /// The sha256 of a `[B, S]` int64 id tensor's values.
    pub fn ids_sha256(ids: &Tensor) -> String {
        let values: Vec<i64> = Vec::<i64>::try_from(ids.flatten(0, -1)).unwrap_or_default();
        let mut h = Sha256::new();
        for v in values {
            h.update(v.to_le_bytes());
        }
        h.update(format!("{:?}", ids.size()).as_bytes());
        format!("{:x}", h.finalize())
    }
}

/// Why a golden file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("golden file {path} is missing\n(hint: generate it with `{fix}`)")]
    Missing { path: PathBuf, fix: String },
    #[error("golden file {path} is missing; its reviewed manifest {manifest} records it (tensors_sha256 {sha})\n(hint: golden files need not live in git: copy the reviewed file into {dir} from where your team keeps them (golden_dir in the matrix, or {GOLDEN_DIR_VAR} for one run), or regenerate it with `{fix}` and review the manifest diff with `cargo test --test golden_manifest`)")]
    MissingReviewed { dir: PathBuf, path: PathBuf, manifest: PathBuf, sha: String, fix: String },
    #[error("golden file {path} is not the reviewed one: the sha256 of its tensor data is {found}, its reviewed manifest {manifest} records {reviewed}\n(hint: fetch the reviewed file again; if this one is an intended new reference, review it with `cargo test --test golden_manifest` and `cargo insta review`)")]
    Unreviewed { path: PathBuf, manifest: PathBuf, found: String, reviewed: String },
    #[error("golden file {path} is stale: {what} changed since it was made (golden {old}, now {new})\n(hint: if the change is intended, regenerate with `{fix}` and review the manifest diff)")]
    Stale { path: PathBuf, what: &'static str, old: String, new: String, fix: String },
    #[error("golden file {path} cannot be read: {source}\n(hint: regenerate it with `{fix}`)")]
    Unreadable { path: PathBuf, source: CaptureError, fix: String },
    #[error("could not write golden file {path}: {source}")]
    Write { path: PathBuf, source: CaptureError },
    #[error("golden file {path} is corrupt: {problem}\n(hint: restore it from version control (`git checkout -- {path}`) or regenerate it with `{fix}`)")]
    Corrupt { path: PathBuf, problem: String, fix: String },
    #[error("golden file {path} was not made for this case: its metadata \"{field}\" is \"{found}\", the case needs \"{expected}\"\n(hint: a golden file is the cpu-f32 reference run of its case, with pads attended; regenerate it with `{fix}`)")]
    Mismatch { path: PathBuf, field: &'static str, found: String, expected: String, fix: String },
    #[error("could not check golden file {path}'s tensor {name} for NaN or inf before writing it: {source}\n(hint: out of memory? the reference run's records are checked one at a time)")]
    Torch { path: PathBuf, name: String, #[source] source: tch::TchError },
    #[error("refusing to write golden file {path}: the reference run's {name} holds {count} NaN or inf value(s)\n(hint: a reference with NaN cannot judge anything; check the model's config.json (rms_norm_eps, rope_theta, multipliers) and weights)")]
    NonFinite { path: PathBuf, name: String, count: i64 },
}

/// The metadata entry that holds the sha256 of a golden file's tensors.
pub const TENSORS_SHA256: &str = "tensors_sha256";

/// The manifest line that records a golden file's [`TENSORS_SHA256`].
pub const MANIFEST_SHA_LINE: &str = "tensors_sha256: ";

/// The folder of golden files, and where their reviewed manifests are.
#[derive(Debug, Clone)]
pub struct GoldenStore {
    pub dir: PathBuf,
    /// The reviewed manifests (`golden/manifests/`), when golden files are checked against them.
    pub manifests: Option<PathBuf>,
}

/// The manifest file name of the golden file at `relative` (to the golden folder):
/// `tiny-llama/fwd-b1-s32.safetensors` has `tiny-llama_fwd-b1-s32_safetensors.snap`.
pub fn manifest_name(relative: &std::path::Path) -> String {
    format!("{}.snap", relative.to_string_lossy().replace(['/', '.'], "_"))
}

impl GoldenStore {
    /// Golden files in `dir`, not checked against any manifest (captures folders, tests).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        GoldenStore { dir: dir.into(), manifests: None }
    }

    /// Golden files in `dir`, each checked, when it has a manifest in `manifests`, against the
    /// `tensors_sha256` its manifest records: a golden file kept outside git (a shared mount, a
    /// CI cache) is then the reviewed one or an error.
    pub fn reviewed(dir: impl Into<PathBuf>, manifests: Option<PathBuf>) -> Self {
        GoldenStore { dir: dir.into(), manifests }
    }

    /// The same folder, not checked against manifests (a golden file just regenerated is not
    /// reviewed yet).
    pub fn unreviewed(&self) -> Self {
        GoldenStore { dir: self.dir.clone(), manifests: None }
    }

    /// The manifest of `case`'s golden file and the `tensors_sha256` it records, when there is one.
    fn reviewed_sha(&self, case: &CaseId) -> Option<(PathBuf, String)> {
        let path = self.path(case);
        let manifest = self.manifests.as_ref()?.join(manifest_name(path.strip_prefix(&self.dir).ok()?));
        let text = std::fs::read_to_string(&manifest).ok()?;
        let sha = text.lines().find_map(|l| l.strip_prefix(MANIFEST_SHA_LINE))?.trim().to_string();
        Some((manifest, sha))
    }

    /// `golden/{model}/{fwd|gen}-b{B}-s{S}[-n{T}].safetensors`: one file per reference run.
    pub fn path(&self, case: &CaseId) -> PathBuf {
        let mode = match case.mode {
            Mode::ModelForward => "fwd",
            Mode::Generate => "gen",
        };
        let mut name = format!("{mode}-b{}-s{}", case.batch_size, case.seq_len);
        if let Some(n) = case.max_new_tokens {
            name.push_str(&format!("-n{n}"));
        }
        self.dir.join(&case.model).join(format!("{name}.safetensors"))
    }

    /// Opens the golden of `case`, failing as missing, unreadable, corrupt or stale against
    /// `expected`. Its tensors are read when asked for: the checksum is taken one tensor at a time.
    pub fn load(&self, case: &CaseId, expected: &Provenance, fix: &str) -> Result<CaptureReader, GoldenError> {
        let path = self.path(case);
        let reviewed = self.reviewed_sha(case);
        if !path.exists() {
            return Err(match reviewed {
                Some((manifest, sha)) => GoldenError::MissingReviewed { dir: self.dir.clone(), path, manifest, sha, fix: fix.to_string() },
                None => GoldenError::Missing { path, fix: fix.to_string() },
            });
        }
        let capture = CaptureReader::open(&path).map_err(|source| GoldenError::Unreadable { path: path.clone(), source, fix: fix.to_string() })?;
        let meta = |k: &str| capture.metadata().get(k).cloned().unwrap_or_else(|| "(none)".into());
        let corrupt = |problem: String| GoldenError::Corrupt { path: path.clone(), problem, fix: fix.to_string() };
        let Some(recorded) = capture.metadata().get(TENSORS_SHA256) else {
            return Err(corrupt(format!("its metadata has no \"{TENSORS_SHA256}\", so its data cannot be verified (made by an older layercheck?)")));
        };
        // Remembered between the processes of a run (a golden file is read by every run of a
        // case): hashing 98 MB (a SmolLM2 case at b1 s64) takes 80 ms, an 8B model's case seconds.
        let actual = crate::remembered_sha256::remembered(TENSORS_SHA256, std::slice::from_ref(&path), || capture.tensors_sha256())
            .map_err(|e| corrupt(format!("its tensors cannot be read: {e}")))?;
        if &actual != recorded {
            return Err(corrupt(format!("the sha256 of its tensor data is {actual}, its metadata records {recorded}")));
        }
        if let Some((manifest, sha)) = reviewed.filter(|(_, sha)| sha != &actual) {
            return Err(GoldenError::Unreviewed { path, manifest, found: actual, reviewed: sha });
        }
        let max_new_tokens = case.max_new_tokens.unwrap_or(0).to_string();
        let mode = case.mode.to_string();
        for (field, expected) in [("target", crate::target::Target::REFERENCE.to_string().as_str()), ("mode", mode.as_str()), ("max_new_tokens", max_new_tokens.as_str()), ("attention_mask", "attend-pads")] {
            let found = meta(field);
            if found != expected {
                return Err(GoldenError::Mismatch { path, field, found, expected: expected.to_string(), fix: fix.to_string() });
            }
        }
        for (what, key, now) in [
            ("the model's config.json", "config_sha256", &expected.config_sha256),
            ("the model's weights", "weights_sha256", &expected.weights_sha256),
            ("the case's input ids", "input_ids_sha256", &expected.input_ids_sha256),
        ] {
            let old = meta(key);
            if &old != now {
                return Err(GoldenError::Stale { path, what, old, new: now.clone(), fix: fix.to_string() });
            }
        }
        Ok(capture)
    }

    /// Writes the golden of `case` atomically, recording `provenance` and the data's checksum;
    /// refuses a capture with NaN or inf anywhere.
    pub fn write(&self, case: &CaseId, mut capture: Capture, provenance: &Provenance) -> Result<PathBuf, GoldenError> {
        let path = self.path(case);
        let mut names: Vec<&String> = capture.tensors.keys().collect();
        names.sort();
        for name in names {
            let t = &capture.tensors[name];
            if t.is_floating_point() {
                let count = t.f_isfinite().and_then(|f| f.f_logical_not()).and_then(|f| f.f_sum(tch::Kind::Int64)).and_then(|n| n.f_int64_value(&[]));
                let count = count.map_err(|source| GoldenError::Torch { path: path.clone(), name: name.clone(), source })?;
                if count > 0 {
                    return Err(GoldenError::NonFinite { path, name: name.clone(), count });
                }
            }
        }
        let sha = capture.tensors_sha256().map_err(|e| GoldenError::Write { path: path.clone(), source: CaptureError::File(crate::tensor_file::TensorFileError::Corrupt { path: path.clone(), problem: e.to_string() }) })?;
        capture.metadata.insert(TENSORS_SHA256.into(), sha);
        capture.metadata.insert("weights_sha256".into(), provenance.weights_sha256.clone());
        capture.metadata.insert("input_ids_sha256".into(), provenance.input_ids_sha256.clone());
        capture.metadata.insert("config_sha256".into(), provenance.config_sha256.clone());
        capture.write(&path).map_err(|source| GoldenError::Write { path: path.clone(), source })?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_reference_run() {
        let store = GoldenStore::new("golden");
        let case: CaseId = "m::cpu-f16::gen::iso::b2::s8::n4::summary".parse::<layercheck_suite::test_name::TestName>().unwrap().case;
        assert_eq!(store.path(&case), PathBuf::from("golden/m/gen-b2-s8-n4.safetensors"));
    }

    /// A golden file outside git is the reviewed one (its manifest's `tensors_sha256`) or an
    /// error that names the manifest; a missing one says where it was expected and how to get it.
    #[test]
    fn with_manifests_a_golden_file_must_be_the_reviewed_one() {
        let dir = tempfile::tempdir().unwrap();
        let (golden, manifests) = (dir.path().join("cache"), dir.path().join("manifests"));
        std::fs::create_dir_all(&manifests).unwrap();
        let case: CaseId = "m::cpu-f16::fwd::b1::s4::summary".parse::<layercheck_suite::test_name::TestName>().unwrap().case;
        let provenance = Provenance { config_sha256: "c".into(), weights_sha256: "w".into(), input_ids_sha256: "i".into() };
        let meta = std::collections::HashMap::from([
            ("target".to_string(), "cpu-f32".to_string()),
            ("mode".to_string(), "model-forward".to_string()),
            ("max_new_tokens".to_string(), "0".to_string()),
            ("attention_mask".to_string(), "attend-pads".to_string()),
        ]);
        let capture = Capture::from_records(&[], vec![("logits".into(), Tensor::from_slice(&[1.0f32, 2.0]))], meta);
        let expected_sha = capture.tensors_sha256().unwrap();
        let store = GoldenStore::reviewed(&golden, Some(manifests.clone()));
        store.write(&case, capture, &provenance).unwrap();
        let manifest = manifests.join("m_fwd-b1-s4_safetensors.snap");
        // No manifest for it: nothing to check against.
        assert!(store.load(&case, &provenance, "fix").is_ok());
        std::fs::write(&manifest, format!("model: m\n{MANIFEST_SHA_LINE}{expected_sha}\n")).unwrap();
        assert!(store.load(&case, &provenance, "fix").is_ok(), "the reviewed file");
        std::fs::write(&manifest, format!("{MANIFEST_SHA_LINE}{}\n", "0".repeat(64))).unwrap();
        let err = store.load(&case, &provenance, "fix").err().unwrap().to_string();
        assert!(err.contains("is not the reviewed one") && err.contains(&expected_sha) && err.contains("m_fwd-b1-s4_safetensors.snap"), "{err}");
        assert!(store.unreviewed().load(&case, &provenance, "fix").is_ok(), "a regenerated file is loaded before review");
        std::fs::remove_file(store.path(&case)).unwrap();
        let err = store.load(&case, &provenance, "fix").err().unwrap().to_string();
        assert!(err.contains("is missing") && err.contains("its reviewed manifest") && err.contains(&golden.display().to_string()) && err.contains(GOLDEN_DIR_VAR), "{err}");
        let err = GoldenStore::new(&golden).load(&case, &provenance, "fix").err().unwrap().to_string();
        assert!(err.contains("is missing") && !err.contains("manifest"), "{err}");
    }
}
