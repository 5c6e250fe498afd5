//! Reports as a person reads them: the markdown (snapshot), the plots, the HTML page in headless
//! Chromium, `layercheck report` rebuilding them from `results.jsonl` or a compact file, and the
//! nextest `ci` profile's JUnit file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layercheck::formats::case::SeedCase;
use layercheck::formats::compact::{CompactRecord, CompactWriter};
use layercheck_suite::outcome::{CaseOutcome, LayerOutcome};
use layercheck_suite::matrix::Margins;
use layercheck_suite::verdict::{check, Bounds, Observation};
use layercheck::hooks::{LayerModule, ModuleKey};
use layercheck::metrics::LayerSummary;
use layercheck::report::{write_case_report, PLOT_SIZE};
use layercheck_suite::attribution::Attribution;
use layercheck_suite::location::ErrorLocation;

const CASE: &str = "tiny-granite::cpu-bf16::fwd::b2::s32";

/// A two-layer case, two prompts: errors grow with depth; `layers1.attn.dense` fails on
/// `abs_diff_l2`, `layers1.ff_sub_layer.w2` is NaN on the target side, `model.head` could not be
/// compared; everything else passes.
fn outcome() -> CaseOutcome {
    let margins = Margins::default();
    let mut layers = Vec::new();
    for (i, key) in ModuleKey::forward_order(2, false).into_iter().enumerate() {
        let name = key.to_string();
        let abs = 1e-3 * 1.3f64.powi(i as i32);
        let dist = 2e-7 * 1.3f64.powi(i as i32);
        let bounds = Bounds::new(Some(abs * 1.25), Some(1.0 - dist * 1.25));
        if key == ModuleKey::Head {
            let error = "the golden file golden/tiny-granite/fwd-b2-s32.safetensors has no record model.head\n(hint: `LAYERCHECK_UPDATE_GOLDEN=1 cargo test --test layers -- 'tiny-granite::cpu-bf16::fwd::b2::s32::'`)";
            layers.push(LayerOutcome { key: name, bounds, observations: vec![], failures: vec![], error: Some(error.into()), attribution: None, location: None });
            continue;
        }
        let mut observations = Vec::new();
        for item in 0..2 {
            let grow = 1.0 + 0.1 * item as f64;
            let mut o = Observation {
                record: name.clone(),
                item,
                abs_diff_l2: abs * grow,
                abs_diff_max: abs * grow / 8.0,
                cos_mean: 1.0 - dist * grow,
                cos_min: 1.0 - 4.0 * dist * grow,
                worst_token: 3 + item as u64,
                target_nonfinite: 0,
                reference_nonfinite: 0,
            };
            if key == ModuleKey::Layer(1, LayerModule::Dense) {
                o.abs_diff_l2 *= 3.0;
            }
            if key == ModuleKey::Layer(1, LayerModule::W2) && item == 1 {
                o.abs_diff_l2 = f64::NAN;
                o.abs_diff_max = f64::NAN;
                o.cos_mean = f64::NAN;
                o.cos_min = f64::NAN;
                o.target_nonfinite = 4;
            }
            observations.push(o);
        }
        let failures = observations.iter().enumerate().flat_map(|(j, o)| check(o, &bounds, &margins).into_iter().map(move |f| (j, f))).collect();
        // Attribution as an isolated re-run would give it: the dense layer makes its own error,
        // the NaN of w2 is inherited; per-token error peaks at token 3 and channel 1.
        let attribution = match key {
            ModuleKey::Layer(1, LayerModule::Dense) => Some(Attribution::Introduced),
            ModuleKey::Layer(1, LayerModule::W2) => Some(Attribution::Inherited),
            _ => None,
        };
        let mut location = ErrorLocation::empty();
        let tokens: Vec<f64> = (0..4).map(|t| abs * abs * if t == 3 { 4.0 } else { 1.0 + t as f64 / 10.0 }).collect();
        location.add(&name, &[tokens.clone(), tokens.iter().map(|v| v * 1.21).collect()], &[abs * abs, 5.0 * abs * abs, 0.5 * abs * abs]);
        layers.push(LayerOutcome { key: name, bounds, observations, failures, error: None, attribution, location: Some(location) });
    }
    CaseOutcome { case: CASE.into(), setup_error: None, layers, notes: vec!["thresholds: thresholds/tiny-granite-thresholds.json (per prompt, p100 at batch-size-2_seq-length-32)".into()], attribution_unavailable: None, logits: None }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_layercheck")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn markdown_report_of_a_failing_case() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_case_report(&outcome(), &Margins::default(), dir.path()).unwrap();
    let names: Vec<_> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["results.jsonl", "report.md", "report.html", "plot.svg", "plot.png"]);
    let md = read(&dir.path().join("report.md"));
    assert!(md.contains("First divergent layer: `model.base_model.layers1.attn.dense`"), "{md}");
    assert!(md.contains("First layer that introduces error: `model.base_model.layers1.attn.dense`"), "{md}");
    insta::assert_snapshot!("markdown_report_of_a_failing_case", md);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5);
}

#[test]
fn plots_are_written_and_show_the_data() {
    let dir = tempfile::tempdir().unwrap();
    write_case_report(&outcome(), &Margins::default(), dir.path()).unwrap();

    let decoder = png::Decoder::new(std::fs::File::open(dir.path().join("plot.png")).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), PLOT_SIZE);
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let pixels: Vec<[u8; 3]> = buf[..info.buffer_size()].chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    let distinct: std::collections::HashSet<_> = pixels.iter().collect();
    assert!(distinct.len() > 50, "a plot has many colours (antialiased text, markers), got {}", distinct.len());
    let red = pixels.iter().filter(|p| p[0] > 180 && p[1] < 60 && p[2] < 60).count();
    assert!(red > 200, "failing layers are ringed in red, got {red} red pixels");
    let dark = pixels.iter().filter(|p| p[0] < 90 && p[1] < 90 && p[2] < 90).count();
    assert!(dark > 2000, "text and axes are drawn (an embedded font, no system one), got {dark} dark pixels");

    let svg = read(&dir.path().join("plot.svg"));
    assert!(svg.contains("<svg") && svg.len() > 10_000, "{} bytes", svg.len());
    let texts: Vec<&str> = svg.split("</text>").filter_map(|chunk| chunk.rsplit_once('>').map(|(_, text)| text.trim())).collect();
    for label in ["abs_diff_l2", "1 - cos_mean", "threshold + margin", "failing", "first divergent layer", "NaN / inf (top edge)", "attn", "ff", "ln", "embedding", "L1", CASE] {
        // At the start of a text element, so that e.g. "ff" is not found inside "abs_diff_l2".
        assert!(texts.iter().any(|t| t.starts_with(label)), "the SVG shows {label:?}");
    }
}

#[test]
fn layercheck_report_rebuilds_the_same_files_from_results_jsonl() {
    let first = tempfile::tempdir().unwrap();
    write_case_report(&outcome(), &Margins::default(), first.path()).unwrap();
    let second = tempfile::tempdir().unwrap();
    let out = Command::new(bin()).args(["report", "--results"]).arg(first.path()).arg("--out").arg(second.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for name in ["results.jsonl", "report.md", "report.html", "plot.svg", "plot.png"] {
        let (a, b) = (std::fs::read(first.path().join(name)).unwrap(), std::fs::read(second.path().join(name)).unwrap());
        assert!(a == b, "{name} differs after a rebuild");
    }
    // In place, from the file itself.
    let out = Command::new(bin()).args(["report", "--results"]).arg(second.path().join("results.jsonl")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(read(&second.path().join("report.md")), read(&first.path().join("report.md")));

    let missing = Command::new(bin()).args(["report", "--results", "/nonexistent/report"]).output().unwrap();
    assert!(!missing.status.success());
    assert!(text(&missing).contains("hint:"), "{}", text(&missing));
    let neither = Command::new(bin()).args(["report"]).output().unwrap();
    assert!(!neither.status.success());
}

/// A compact file of two layers, two prompts, the second layer in two forward calls.
fn compact_file(dir: &Path) -> PathBuf {
    let summary = |abs: f64, cos: f64| LayerSummary {
        elements: 64,
        rows: 8,
        abs_diff_sq_sum: abs * abs,
        abs_diff_sq_sum_finite: abs * abs,
        abs_diff_sum: abs,
        abs_diff_max: abs / 2.0,
        reference_sq_sum: 100.0,
        cos_sum: cos * 8.0,
        cos_sum_finite: cos * 8.0,
        cos_min: cos,
        ..LayerSummary::empty()
    };
    let record = |key: &str, abs: f64, cos: f64| {
        let items = vec![summary(abs, cos), summary(abs * 1.1, cos - 1e-7)];
        let mut all = LayerSummary::empty();
        items.iter().for_each(|s| all.merge(s));
        CompactRecord { key: key.into(), reference_shape: vec![2, 8, 8], target_shape: vec![2, 8, 8], cos_shape: vec![2, 8], summary: all, items, cos_sim: vec![cos; 16] }
    };
    let mut w = CompactWriter::new(SeedCase::new("tiny-granite", 4, 2, 8)).with_metadata("target", "cpu-f16").unwrap();
    w.push_record(record("model.base_model.embedding", 1e-3, 1.0 - 1e-7)).unwrap();
    w.push_record(record("model.base_model.layers0.ln", 4e-3, 1.0 - 4e-7)).unwrap();
    w.push_record(record("model.base_model.layers0.ln.iter-30", 5e-3, 1.0 - 5e-7)).unwrap();
    w.write(dir).unwrap()
}

#[test]
fn layercheck_report_from_a_compact_file_with_and_without_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let file = compact_file(dir.path());
    let plain = dir.path().join("plain");
    let out = Command::new(bin()).args(["report", "--compact"]).arg(&file).arg("--out").arg(&plain).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let md = read(&plain.join("report.md"));
    assert!(md.contains("2 layers, no thresholds given"), "{md}");
    assert!(md.contains("| 1 | `model.base_model.layers0.ln` | ln | 5.5000e-3 | - |"), "worst over both calls and prompts:\n{md}");
    assert!(!md.contains("FAIL"), "{md}");
    assert!(plain.join("plot.png").is_file() && plain.join("report.html").is_file());
    let jsonl = read(&plain.join("results.jsonl"));
    assert_eq!(jsonl.lines().count(), 1 + 2 + 4, "{jsonl}");
    assert!(jsonl.contains("\"verdict\":\"unchecked\"") && jsonl.contains("\"rel_l2\""), "{jsonl}");

    // Pooled seed thresholds: layers0.ln's 5e-3 fails against 4e-3.
    let thresholds = dir.path().join("t.json");
    std::fs::write(&thresholds, r#"{"model_id": "tiny-granite", "abs_diff": {"model.base_model.embedding": 0.01, "model.base_model.layers0.ln": 0.004}, "cos_sim_avg": {"model.base_model.embedding": 0.99, "model.base_model.layers0.ln": 0.99}}"#).unwrap();
    let judged = dir.path().join("judged");
    let out = Command::new(bin()).args(["report", "--compact"]).arg(&file).arg("--thresholds").arg(&thresholds).arg("--out").arg(&judged).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let md = read(&judged.join("report.md"));
    assert!(md.contains("**FAIL**: 1 of 2 layers fail. First divergent layer: `model.base_model.layers0.ln` (#1)."), "{md}");
    assert!(md.contains("pooled seed values"), "{md}");

    let no_out = Command::new(bin()).args(["report", "--compact"]).arg(&file).output().unwrap();
    assert!(!no_out.status.success(), "--compact needs --out");
}

/// `/usr/bin/chromium`, or `None` (with a message) when it is absent and not required.
fn chromium() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/chromium");
    let required = match std::env::var("LAYERCHECK_REQUIRE_CHROMIUM").as_deref() {
        Err(_) | Ok("") | Ok("0") => false,
        Ok("1") => true,
        Ok(other) => panic!("LAYERCHECK_REQUIRE_CHROMIUM={other:?}: expected 1 or 0"),
    };
    if path.is_file() {
        return Some(path);
    }
    assert!(!required, "LAYERCHECK_REQUIRE_CHROMIUM=1 but /usr/bin/chromium is missing\n(hint: apt-get install -y chromium)");
    eprintln!("SKIPPED: /usr/bin/chromium is not installed, so the HTML report was not opened in a browser (install it with `apt-get install -y chromium`; LAYERCHECK_REQUIRE_CHROMIUM=1 makes its absence a failure)");
    None
}

/// Opens `page` in headless Chromium: the DOM it built, and the console messages it logged.
fn open_in_chromium(chromium: &Path, page: &Path) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {}", text(&out));
    // Page console messages (errors, CSP violations, failed loads) are logged as `...:CONSOLE...`;
    // the rest of stderr is the browser's own noise (no D-Bus in a container).
    let console = String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains(":CONSOLE")).map(String::from).collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

#[test]
fn html_report_opens_in_headless_chromium_without_errors() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_case_report(&outcome(), &Margins::default(), dir.path()).unwrap();
    let (dom, console) = open_in_chromium(&chromium, &dir.path().join("report.html"));
    assert!(console.is_empty(), "the page logged console messages:\n{}", console.join("\n"));
    assert!(dom.contains("<table id=\"layers\">"), "{dom}");
    let table = &dom[dom.find("<table id=\"layers\">").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(table.matches("<tr").count(), 1 + 28, "a header and one row per layer");
    assert!(dom.contains("<svg") && dom.contains("threshold + margin"), "the plot is inline");
    assert!(dom.contains("id=\"first-divergent\""), "{dom}");
    // Attribution and the heat strip: one row of 4 tokens per compared layer (27 of 28).
    assert!(dom.contains("id=\"attribution\"") && dom.contains("<strong>introduced</strong>"), "{dom}");
    let heat = &dom[dom.find("<figure id=\"heat\">").expect("a heat strip")..];
    let heat = &heat[..heat.find("</figure>").unwrap()];
    assert_eq!(heat.matches("<rect").count(), 27 * 4, "{heat}");
}

/// The check above would see an error: a page with a script error and an external image.
#[test]
fn chromium_console_check_catches_a_broken_page() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(&page, "<!DOCTYPE html><html><body><table id=\"layers\"></table><script>undefinedFunction()</script></body></html>").unwrap();
    let (_, console) = open_in_chromium(&chromium, &page);
    assert!(console.iter().any(|l| l.contains("undefinedFunction")), "{console:?}");
}

/// `cargo nextest run --profile ci` on one cheap test of this file writes a JUnit file naming it.
/// The profile is read from a copy of `.config/nextest.toml` whose store is a temporary folder,
/// so a CI run's own `target/nextest/ci/junit.xml` is never touched.
#[test]
fn nextest_ci_profile_writes_junit_xml() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cargo = env!("CARGO");
    let version = Command::new(cargo).args(["nextest", "--version"]).output();
    if !version.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: cargo-nextest is not installed (cargo install cargo-nextest)");
        return;
    }
    let store = tempfile::tempdir().unwrap();
    let config = store.path().join("nextest.toml");
    let ours = read(&root.join(".config/nextest.toml"));
    std::fs::write(&config, format!("[store]\ndir = \"{}\"\n\n{ours}", store.path().display())).unwrap();
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).args(["nextest", "run", "--profile", "ci", "--test", "report", "--config-file"]).arg(&config);
    cmd.args(["-E", "test(=layercheck_report_rebuilds_the_same_files_from_results_jsonl)"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("NEXTEST") || k.starts_with("LAYERCHECK_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let junit = read(&store.path().join("ci/junit.xml"));
    assert!(junit.starts_with("<?xml"), "{junit}");
    assert!(junit.contains("<testcase name=\"layercheck_report_rebuilds_the_same_files_from_results_jsonl\""), "{junit}");
    assert!(junit.contains("tests=\"1\"") && junit.contains("failures=\"0\""), "{junit}");
}
