//! Invariants of the model and its hooks that need no reference file.

use std::path::{Path, PathBuf};

use layercheck::capture::{Mode, Recorder};
use layercheck::hooks::{Hooks, LayerModule, ModuleKey};
use layercheck::inputs::TokenBatch;
use layercheck::model::{AttentionMask, DecoderModel};
use layercheck::run::{self, RunSpec};
use layercheck::target::Target;
use tch::{Kind, Tensor};

fn dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(model)
}

fn logits(model: &DecoderModel, rows: Vec<Vec<i64>>, mask: AttentionMask) -> Tensor {
    let ids = TokenBatch::from_rows(rows).unwrap().to_tensor();
    tch::no_grad(|| model.forward(&ids, mask, &mut Hooks::none()).unwrap())
}

/// With a proper mask, left padding changes nothing for the real tokens: their logits equal those
/// of the unpadded prompt run alone. With the seed's attend-pads behaviour they differ.
#[test]
fn a_proper_mask_makes_left_padding_invisible() {
    for name in ["tiny-granite", "tiny-llama"] {
        let model = DecoderModel::load(&dir(name), Target::REFERENCE).unwrap();
        let prompt = vec![17, 99, 250, 3, 42];
        let alone = logits(&model, vec![prompt.clone()], AttentionMask::AttendPads);
        let padded_row: Vec<i64> = [0, 0, 0].into_iter().chain(prompt.iter().copied()).collect();
        let proper = logits(&model, vec![padded_row.clone()], AttentionMask::Proper).narrow(1, 3, 5);
        let diff = (&proper - &alone).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{name}: padded with a proper mask differs by {diff}");
        let seed = logits(&model, vec![padded_row], AttentionMask::AttendPads).narrow(1, 3, 5);
        assert!((&seed - &alone).abs().max().double_value(&[]) > 1e-3, "{name}: attending pads should change the logits");
    }
}

/// A listener that needs only early modules stops the forward: later modules are not computed.
#[test]
fn a_listener_can_stop_the_forward_after_its_last_module() {
    let model = DecoderModel::load(&dir("tiny-granite"), Target::REFERENCE).unwrap();
    let last = ModuleKey::Layer(0, LayerModule::Dense);
    let keys = [ModuleKey::Layer(0, LayerModule::Ln), last];
    let batch = TokenBatch::from_rows(vec![vec![5, 6, 7]]).unwrap();
    let spec = RunSpec { mode: Mode::ModelForward, max_new_tokens: 0, mask: AttentionMask::AttendPads };
    let capture = run::capture(&model, &dir("tiny-granite"), &batch, &spec, Recorder::only(keys, Some(last))).unwrap();
    assert_eq!(capture.keys, ["model.base_model.layers0.ln", "model.base_model.layers0.attn.dense"]);
    assert!(!capture.tensors.contains_key("logits"), "a stopped forward has no logits");
}

/// Inputs are captured on request, under `input:{name}`, and are what the module consumed.
#[test]
fn captured_inputs_are_the_previous_modules_outputs() {
    let model = DecoderModel::load(&dir("tiny-llama"), Target::REFERENCE).unwrap();
    let batch = TokenBatch::from_rows(vec![vec![5, 6, 7, 8]]).unwrap();
    let spec = RunSpec { mode: Mode::ModelForward, max_new_tokens: 0, mask: AttentionMask::AttendPads };
    let c = run::capture(&model, &dir("tiny-llama"), &batch, &spec, Recorder::all().with_inputs()).unwrap();
    let t = |n: &str| &c.tensors[n];
    assert!(t("input:model.base_model.layers1.attn.in_proj.query").equal(t("model.base_model.layers1.ln")));
    assert!(t("input:model.base_model.layers1.ff_sub_layer.a").equal(t("model.base_model.layers1.ff_sub_layer.wg")));
    assert!(t("input:model.head").equal(t("model.base_model.dec_norm")));
    // The fused in_proj record is q, k, v side by side.
    let qkv = Tensor::cat(&[t("model.base_model.layers1.attn.in_proj.query"), t("model.base_model.layers1.attn.in_proj.key"), t("model.base_model.layers1.attn.in_proj.value")], -1);
    assert!(t("model.base_model.layers1.attn.in_proj").equal(&qkv));
}

/// Half-precision targets run in their precision and stay close to the reference.
#[test]
fn half_precision_targets_run_in_their_precision() {
    let reference = DecoderModel::load(&dir("tiny-granite"), Target::REFERENCE).unwrap();
    let r = logits(&reference, vec![vec![5, 6, 7, 8, 9]], AttentionMask::AttendPads);
    for (target, kind, bound) in [("cpu-f16", Kind::Half, 0.05), ("cpu-bf16", Kind::BFloat16, 0.3)] {
        let model = DecoderModel::load(&dir("tiny-granite"), target.parse().unwrap()).unwrap();
        let l = logits(&model, vec![vec![5, 6, 7, 8, 9]], AttentionMask::AttendPads);
        assert_eq!(l.kind(), kind);
        let diff = (l.to_kind(Kind::Float) - &r).abs().max().double_value(&[]);
        // Bounds: a few units in the last place of the logits' magnitude (|logits| ~ 3) in each precision.
        assert!(diff > 0.0 && diff < bound, "{target}: max |diff| {diff}");
    }
}

/// The README's `layercheck capture` command line, every option given, runs and records what it
/// asked for.
#[test]
fn the_readme_capture_command_line_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.txt");
    std::fs::write(&prompts, "The capital of France is\nOne, two, three,\n").unwrap();
    let out = tmp.path().join("run.safetensors");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_layercheck"))
        .args(["capture", "--model-path"])
        .arg(dir("tiny-granite"))
        .args(["--target", "cpu-f16", "--prompts"])
        .arg(&prompts)
        .args(["--seq-length", "16", "--mode", "generate", "--max-new-tokens", "2", "--attention-mask", "proper", "--capture-inputs", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let capture = layercheck::capture::Capture::read(&out).unwrap();
    assert_eq!(capture.metadata["attention_mask"], "proper");
    assert_eq!(capture.tensors["input_ids"].size(), [2, 16]);
    assert_eq!(capture.tensors["output_ids"].size(), [2, 18]);
    assert!(capture.tensors.contains_key("input:model.base_model.layers0.attn.dense"));
}
