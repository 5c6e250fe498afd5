//! Our models against references made once by Python (scripts/reference/make_reference*.py):
//! transformers' logits and greedy tokens, and fms's per-module outputs, module keys and order.
//! Tolerances: logits <= 1e-4 max abs (issue 3), module outputs <= 1e-5 relative, measured as
//! max |ours - fms| / max |fms| per module.

use std::path::{Path, PathBuf};

use layercheck::capture::{Capture, Mode, Recorder};
use layercheck::inputs::{TokenBatch, Tokenizer};
use layercheck::model::{AttentionMask, DecoderModel};
use layercheck::run::{self, RunSpec};
use layercheck::target::Target;
use layercheck::tensor_file::TensorFile;
use tch::{Kind, Tensor};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn fixture(name: &str) -> TensorFile {
    TensorFile::read(&repo(&format!("tests/fixtures/reference/{name}.safetensors"))).unwrap()
}

fn batch_of(ids: &Tensor) -> TokenBatch {
    let (b, s) = ids.size2().unwrap();
    let flat: Vec<i64> = Vec::<i64>::try_from(ids.flatten(0, -1)).unwrap();
    TokenBatch::from_rows(flat.chunks(s as usize).map(<[i64]>::to_vec).collect::<Vec<_>>()[..b as usize].to_vec()).unwrap()
}

fn run_capture(model: &str, ids: &Tensor, mode: Mode, new_tokens: usize) -> Capture {
    let dir = repo(&format!("models/{model}"));
    let m = DecoderModel::load(&dir, Target::REFERENCE).unwrap();
    let spec = RunSpec { mode, max_new_tokens: new_tokens, mask: AttentionMask::AttendPads };
    run::capture(&m, &dir, &batch_of(ids), &spec, Recorder::all()).unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().to_kind(Kind::Double).double_value(&[])
}

/// Compares every `fms.{prefix}` tensor of the fixture with our record of the same name, and the
/// record order with `order_key` in the metadata.
fn assert_matches_fms(model: &str, fixture: &TensorFile, ours: &Capture, prefix: &str, order_key: &str) {
    let order: Vec<String> = serde_json::from_str(&fixture.metadata[order_key]).unwrap();
    assert_eq!(ours.keys, order, "{model}: record names and order differ from fms's");
    let mut worst = (0.0f64, String::new());
    for name in &order {
        let reference = fixture.get(&format!("{prefix}{name}")).unwrap_or_else(|| panic!("fixture lacks {prefix}{name}"));
        let got = &ours.tensors[name];
        assert_eq!(got.size(), reference.size(), "{model} {name}: shape");
        let rel = max_abs(&(got - reference)) / max_abs(reference).max(1e-30);
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
        assert!(rel <= 1e-5, "{model} {name}: relative difference {rel:e} > 1e-5");
    }
    eprintln!("{model} {prefix}: worst module {} at {:e} relative", worst.1, worst.0);
}

#[test]
fn tiny_models_match_transformers_logits_and_fms_modules() {
    for model in ["tiny-granite", "tiny-llama"] {
        let f = fixture(model);
        let ids = f.get("input_ids").unwrap();
        let ours = run_capture(model, ids, Mode::ModelForward, 0);
        let diff = max_abs(&(&ours.tensors["logits"] - f.get("hf.logits").unwrap()));
        assert!(diff <= 1e-4, "{model}: logits differ from transformers by {diff:e}");
        eprintln!("{model}: logits max abs diff {diff:e}");
        assert_matches_fms(model, &f, &ours, "fms.", "fms_order");
    }
}

#[test]
fn tiny_models_generate_transformers_greedy_tokens_and_fms_records() {
    for model in ["tiny-granite", "tiny-llama"] {
        let f = fixture(model);
        let ids = f.get("input_ids").unwrap();
        let expected = f.get("hf.greedy_ids").unwrap();
        let new_tokens = (expected.size()[1] - ids.size()[1]) as usize;
        let ours = run_capture(model, ids, Mode::Generate, new_tokens);
        assert!(ours.tensors["output_ids"].equal(expected), "{model}: greedy ids differ:\n{}\nvs\n{}", ours.tensors["output_ids"], expected);
        // fms's generate with 2 new tokens: plain keys for the prompt, `.iter-N` after.
        let two = run_capture(model, ids, Mode::Generate, 2);
        assert_matches_fms(model, &f, &two, "fms.generate.", "fms_generate_order");
    }
}

#[test]
fn the_tiny_tokenizer_round_trips_text() {
    let tokenizer = Tokenizer::load(&repo("models/tiny-granite")).unwrap();
    let ids = tokenizer.encode("The quick brown fox").unwrap();
    assert_eq!(tokenizer.decode(&ids).unwrap(), "The quick brown fox");
}

const SMOLLM2: &str = "models/smollm2-135m-instruct";

#[test]
#[ignore = "needs models/smollm2-135m-instruct: python scripts/reference/convert_smollm2.py"]
fn smollm2_matches_transformers_logits_and_greedy_tokens() {
    let f = fixture("smollm2-135m");
    let dir = repo(SMOLLM2);
    let model = DecoderModel::load(&dir, Target::REFERENCE).unwrap();
    let spec = RunSpec { mode: Mode::ModelForward, max_new_tokens: 0, mask: AttentionMask::AttendPads };
    let ours = run::capture(&model, &dir, &batch_of(f.get("input_ids").unwrap()), &spec, Recorder::only([], None)).unwrap();
    let diff = max_abs(&(&ours.tensors["logits"] - f.get("hf.logits").unwrap()));
    eprintln!("smollm2: logits max abs diff {diff:e}");
    assert!(diff <= 1e-4, "smollm2: logits differ from transformers by {diff:e}");

    let prompts: Vec<String> = serde_json::from_str(&f.metadata["prompts"]).unwrap();
    let tokenizer = Tokenizer::load(&dir).unwrap();
    for (i, prompt) in prompts.iter().enumerate() {
        let expected = f.get(&format!("hf.greedy.{i}")).unwrap();
        let batch = TokenBatch::from_prompts(std::slice::from_ref(prompt), &tokenizer, None, Path::new("prompt")).unwrap();
        let new_tokens = expected.size()[1] as usize - batch.seq_len();
        let spec = RunSpec { mode: Mode::Generate, max_new_tokens: new_tokens, mask: AttentionMask::AttendPads };
        let got = run::capture(&model, &dir, &batch, &spec, Recorder::only([], None)).unwrap();
        let got = &got.tensors["output_ids"];
        let text = tokenizer.decode(&Vec::<i64>::try_from(got.flatten(0, -1)).unwrap()).unwrap();
        assert!(got.equal(expected), "prompt {i}: greedy ids differ; ours decode to {text:?}");
    }
}
