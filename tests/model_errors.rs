//! Every refused model folder and bad input file fails with a message naming the file and the
//! problem, and a hint. Each case starts from a copy of the embedded tiny models and breaks one thing.

use std::path::{Path, PathBuf};

use layercheck::inputs::{read_prompts, TokenBatch, Tokenizer};
use layercheck::model::DecoderModel;
use layercheck::target::Target;
use layercheck::tensor_file::{write_atomic, TensorFile};

fn copy_model(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name);
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(name);
    std::fs::create_dir(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    (tmp, dst)
}

fn load_error(dir: &Path) -> String {
    match DecoderModel::load(dir, Target::REFERENCE) {
        Ok(_) => panic!("{} loaded but should have been refused", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

fn assert_contains(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "expected {p:?} in:\n{err}");
    }
}

#[test]
fn the_embedded_models_load() {
    for name in ["tiny-granite", "tiny-llama"] {
        let (_tmp, dir) = copy_model(name);
        DecoderModel::load(&dir, Target::REFERENCE).unwrap();
    }
}

#[test]
fn a_missing_config_is_named() {
    let (_tmp, dir) = copy_model("tiny-granite");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_contains(&load_error(&dir), &["config.json", "No such file", "hint: an HF model folder needs config.json"]);
}

#[test]
fn a_config_field_it_cannot_honour_is_refused_by_name() {
    let (_tmp, dir) = copy_model("tiny-llama");
    edit_config(&dir, |v| v["mlp_bias"] = true.into());
    assert_contains(&load_error(&dir), &["config.json: field \"mlp_bias\" = true is not supported", "hint:"]);
    edit_config(&dir, |v| {
        v["mlp_bias"] = false.into();
        v["rope_parameters"] = serde_json::json!({"rope_theta": 1e4, "rope_type": "dynamic", "factor": 2.0});
    });
    assert_contains(&load_error(&dir), &["field \"rope_parameters.rope_type\" = \"dynamic\" is not implemented"]);
}

#[test]
fn missing_weight_files_are_named() {
    let (_tmp, dir) = copy_model("tiny-granite");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert_contains(&load_error(&dir), &["model.safetensors is missing", "hint:"]);

    let (_tmp, dir) = copy_model("tiny-llama");
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    assert_contains(&load_error(&dir), &["model-00002-of-00003.safetensors", "No such file"]);
}

#[test]
fn a_corrupt_shard_or_index_is_named() {
    let (_tmp, dir) = copy_model("tiny-llama");
    let shard = dir.join("model-00001-of-00003.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    assert_contains(&load_error(&dir), &["model-00001-of-00003.safetensors", "not a valid safetensors file", "truncated or corrupt"]);

    let (_tmp, dir) = copy_model("tiny-llama");
    std::fs::write(dir.join("model.safetensors.index.json"), "{\"metadata\": {}}").unwrap();
    assert_contains(&load_error(&dir), &["model.safetensors.index.json", "not a valid shard index", "weight_map"]);
}

/// Rewrites one tensor of a single-file checkpoint.
fn replace_weight(dir: &Path, name: &str, mut f: impl FnMut(&tch::Tensor) -> Option<tch::Tensor>) {
    let path = dir.join("model.safetensors");
    let file = TensorFile::read(&path).unwrap();
    let mut tensors = Vec::new();
    for (n, t) in file.tensors {
        if n == name {
            if let Some(new) = f(&t) {
                tensors.push((n, new));
            }
        } else {
            tensors.push((n, t));
        }
    }
    write_atomic(&path, &tensors, file.metadata).unwrap();
}

#[test]
fn a_wrong_shape_weight_names_the_weight_file_and_shapes() {
    let (_tmp, dir) = copy_model("tiny-granite");
    replace_weight(&dir, "model.layers.1.mlp.up_proj.weight", |t| Some(t.narrow(0, 0, 95)));
    assert_contains(
        &load_error(&dir),
        &["weight model.layers.1.mlp.up_proj.weight in", "model.safetensors has shape [95, 64], config.json implies [96, 64]", "hint:"],
    );
}

#[test]
fn a_missing_or_extra_weight_is_refused() {
    let (_tmp, dir) = copy_model("tiny-granite");
    replace_weight(&dir, "model.norm.weight", |_| None);
    assert_contains(&load_error(&dir), &["weight model.norm.weight is missing from", "model.safetensors"]);

    let (_tmp, dir) = copy_model("tiny-granite");
    let path = dir.join("model.safetensors");
    let mut file = TensorFile::read(&path).unwrap();
    file.tensors.push(("model.layers.0.self_attn.o_proj.bias".into(), tch::Tensor::zeros([64], (tch::Kind::Float, tch::Device::Cpu))));
    write_atomic(&path, &file.tensors, file.metadata).unwrap();
    assert_contains(&load_error(&dir), &["holds weights the model does not use: model.layers.0.self_attn.o_proj.bias", "refused rather than ignored"]);
}

#[test]
fn half_precision_checkpoints_load() {
    for kind in [tch::Kind::Half, tch::Kind::BFloat16] {
        let (_tmp, dir) = copy_model("tiny-granite");
        let path = dir.join("model.safetensors");
        let file = TensorFile::read(&path).unwrap();
        let tensors: Vec<(String, tch::Tensor)> = file.tensors.into_iter().map(|(n, t)| (n, t.to_kind(kind))).collect();
        write_atomic(&path, &tensors, file.metadata).unwrap();
        DecoderModel::load(&dir, Target::REFERENCE).unwrap();
    }
}

#[test]
fn bad_input_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("ragged.json", "[[1, 2, 3], [4, 5]]", "row 1 has 2 ids but row 0 has 3"),
        ("text.json", "{\"ids\": [1]}", "not a list of lists of integer ids"),
        ("negative.json", "[[1, -2]]", "row 0 holds a negative id -2"),
        ("empty.json", "[]", "no rows: the batch is empty"),
        ("float.json", "[[1.5]]", "not a list of lists of integer ids"),
    ];
    for (name, text, expected) in cases {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let err = TokenBatch::read_json(&path).unwrap_err().to_string();
        assert_contains(&err, &[name, expected, "hint: an input-ids file is a JSON list"]);
    }
    let err = TokenBatch::read_json(&tmp.path().join("absent.json")).unwrap_err().to_string();
    assert_contains(&err, &["absent.json", "No such file"]);

    let batch = TokenBatch::from_rows(vec![vec![1, 384]]).unwrap();
    let err = batch.check_vocab(384).unwrap_err().to_string();
    assert_contains(&err, &["token id 384 at batch 0, position 1 is outside the vocabulary of 384 ids"]);

    let prompts = tmp.path().join("prompts.json");
    std::fs::write(&prompts, "[\"a\", 3]").unwrap();
    assert_contains(&read_prompts(&prompts).unwrap_err().to_string(), &["prompts.json", "not a JSON list of strings"]);
    let blank = tmp.path().join("blank.txt");
    std::fs::write(&blank, "\n  \n").unwrap();
    assert_contains(&read_prompts(&blank).unwrap_err().to_string(), &["blank.txt", "holds no prompts"]);

    let err = Tokenizer::load(tmp.path()).err().unwrap().to_string();
    assert_contains(&err, &["tokenizer.json", "does not exist", "hint: the model folder needs an HF tokenizer.json"]);
    std::fs::write(tmp.path().join("tokenizer.json"), "{broken").unwrap();
    assert_contains(&Tokenizer::load(tmp.path()).err().unwrap().to_string(), &["tokenizer.json", "could not load the tokenizer"]);
}

#[test]
fn prompts_are_left_padded_with_zero_and_too_long_prompts_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-granite");
    let tokenizer = Tokenizer::load(&dir).unwrap();
    let prompts = vec!["hello world".to_string(), "the cat sat on the mat and looked around".to_string()];
    let short = tokenizer.encode(&prompts[0]).unwrap();
    let long = tokenizer.encode(&prompts[1]).unwrap();
    let s = long.len() + 2;
    let batch = TokenBatch::from_prompts(&prompts, &tokenizer, Some(s), Path::new("p.txt")).unwrap();
    assert_eq!(batch.rows[0][..s - short.len()], vec![0; s - short.len()][..]);
    assert_eq!(batch.rows[0][s - short.len()..], short[..]);
    assert_eq!(batch.rows[1][2..], long[..]);
    let err = TokenBatch::from_prompts(&prompts, &tokenizer, Some(long.len() - 1), Path::new("p.txt")).unwrap_err().to_string();
    assert_contains(&err, &["p.txt: prompt 1 is", "more than the sequence length", "hint: raise the sequence length"]);
}

#[test]
fn cuda_targets_say_they_are_not_available() {
    if tch::Cuda::is_available() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-granite");
    let err = DecoderModel::load(&dir, "cuda-f16".parse().unwrap()).err().unwrap().to_string();
    assert_contains(&err, &["target cuda-f16 is not available"]);
}

/// A libtorch op that fails inside the forward (here: a listener hands a module an input of the
/// wrong width, as a damaged feed would; out of memory is the other cause) ends the run with an
/// error naming the target and the module, not a panic of the computing process.
#[test]
fn a_libtorch_failure_in_the_forward_is_an_error_naming_the_module() {
    use layercheck::hooks::{Listener, ModuleKey};
    struct WrongWidth;
    impl Listener for WrongWidth {
        fn replace_input(&mut self, key: ModuleKey, computed: &tch::Tensor) -> Option<tch::Tensor> {
            let dense: ModuleKey = "model.base_model.layers1.attn.dense".parse().unwrap();
            let mut size = computed.size();
            *size.last_mut().unwrap() += 5;
            (key == dense).then(|| tch::Tensor::zeros(size.as_slice(), (computed.kind(), computed.device())))
        }
        fn on_output(&mut self, _: ModuleKey, _: Option<&tch::Tensor>, _: &mut tch::Tensor) -> std::ops::ControlFlow<()> {
            std::ops::ControlFlow::Continue(())
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = DecoderModel::load(&root.join("models/tiny-granite"), Target::REFERENCE).unwrap();
    let batch = TokenBatch::from_rows(vec![vec![5, 6, 7, 8]]).unwrap();
    let spec = layercheck::run::RunSpec { mode: layercheck::capture::Mode::ModelForward, max_new_tokens: 0, mask: layercheck::model::AttentionMask::AttendPads };
    let err = match layercheck::run::execute(&model, &batch, &spec, None, &mut WrongWidth) {
        Ok(_) => panic!("a forward with a wrong-width input succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("the cpu-f32 forward failed at model.base_model.layers1.attn.dense") && err.contains("hint"), "{err}");
}
