//! ShareGPT sampling against the seed's real sampling code
//! (tests/fixtures/sharegpt/, made by scripts/reference/make_sharegpt_fixture.py).

use std::path::{Path, PathBuf};

use layercheck::sharegpt::{load_first_turns, prepare_inputs, sample_prompts, ShareGptError};
use serde::Deserialize;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn tokenizer() -> tokenizers::Tokenizer {
    tokenizers::Tokenizer::from_file(root().join("models/tiny-granite/tokenizer.json")).unwrap()
}

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    batch_size: usize,
    seq_length: usize,
    texts: Vec<String>,
    ids: Vec<Vec<i64>>,
}

#[test]
fn picks_the_prompts_and_ids_the_seed_picks() {
    let data = root().join("tests/fixtures/sharegpt/sharegpt.json");
    let expected: Expected = serde_json::from_str(&std::fs::read_to_string(root().join("tests/fixtures/sharegpt/expected.json")).unwrap()).unwrap();
    assert_eq!(expected.cases.len(), 5);
    let tok = tokenizer();
    for case in &expected.cases {
        let batch = prepare_inputs(&data, &tok, case.batch_size, case.seq_length).unwrap();
        let texts: Vec<_> = batch.prompts.iter().map(|p| p.text.clone()).collect();
        assert_eq!(texts, case.texts, "B={} S={}", case.batch_size, case.seq_length);
        assert_eq!(batch.ids, case.ids, "B={} S={}", case.batch_size, case.seq_length);
        assert!(batch.ids.iter().all(|r| r.len() == case.seq_length));
    }
}

#[test]
fn skips_single_turn_conversations_and_reports_too_few_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    std::fs::write(
        &path,
        r#"[{"conversations": [{"from": "human", "value": "only one"}]},
            {"conversations": [{"from": "gpt", "value": "first turn"}, {"from": "human", "value": 3}]},
            {"id": "x", "conversations": [{"value": "a b c"}, {"value": "d"}, {"value": "e"}]}]"#,
    )
    .unwrap();
    assert_eq!(load_first_turns(&path).unwrap(), ["first turn", "a b c"]);
    let err = sample_prompts(&load_first_turns(&path).unwrap(), &tokenizer(), 5, 8, 0).unwrap_err();
    assert!(matches!(err, ShareGptError::NotEnough { needed: 5, min: 4, max: 8, .. }), "{err}");
    assert!(err.to_string().contains("hint"));
    std::fs::write(&path, r#"[{"conversations": [{"from": "gpt"}, {"value": "x"}]}]"#).unwrap();
    let err = load_first_turns(&path).unwrap_err().to_string();
    assert!(err.contains("entry 0") && err.contains("missing"), "{err}");
    std::fs::write(&path, r#"{"not": "a list"}"#).unwrap();
    assert!(matches!(load_first_turns(&path), Err(ShareGptError::Format { .. })));
}
