//! The computation of `get_thresholds.py` over a folder of seed CSV and compact files.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::file::{MetricThresholds, ThresholdsFile};
use super::false_failures::{choose_headroom, FalseFailureEstimate, PromptObservations};
use super::logits::LogitsPool;
use layercheck_suite::matrix::Margins;
use super::per_shape::{observation_len, Observations, PerShapeThresholds, ShapeThresholds};
use super::percentile::percentile_linear;
use super::{Progress, ThresholdsError};
use crate::formats::case::{file_model_id, strip_iter, SeedCase};
use crate::formats::compact::CompactFile;
use crate::formats::metric_files::{compact_files, csv_prefix, file_name, glob_files, natural_cmp, python_layer_name};
use crate::formats::seed_csv::{read_seed_csv, read_values, SeedMetric};
use crate::metrics::CompensatedSum;

/// `get_thresholds.py`'s command line, plus the per-shape percentile.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdsOptions {
    /// `--models`: model ids (`/` becomes `--`).
    pub models: Vec<String>,
    /// `--metrics`: e.g. `abs_diff cos_sim_avg cos_sim_mean`.
    pub metrics: Vec<String>,
    /// `--file_base`: the folder of metric files.
    pub file_base: PathBuf,
    /// `--layer_io`: per-layer mode.
    pub layer_io: bool,
    /// `--output_path`: where `{model}-thresholds.json` goes.
    pub output_path: PathBuf,
    /// The percentile of the per-shape thresholds (layer mode), in [0, 100].
    pub percentile: f64,
    /// The margins the false-failure estimate judges with (the suite's).
    pub margins: Margins,
    /// A per-layer-test false-failure rate to meet by widening the thresholds
    /// (`--false-failure-rate`; see [`super::false_failures`]).
    pub false_failure_rate: Option<f64>,
}

/// What a computation found, for the user.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThresholdsReport {
    /// The model id in file form.
    pub model: String,
    /// Per metric: the number of CSV files its glob matched.
    pub files_per_metric: Vec<(String, usize)>,
    /// Compact files read.
    pub compact_files: usize,
    /// Per metric: the number of layers with a value.
    pub layers_per_metric: Vec<(String, usize)>,
    /// Per-shape (batch size, seq length, layer key) entries that saw non-finite observations.
    pub nonfinite: Vec<(u64, u64, String)>,
    /// Seed CSV cases whose records are not a whole forward of the modules they name (a run cut
    /// short, or a hand-made subset): the case prefix and the first missing module keys.
    pub incomplete: Vec<(String, Vec<String>)>,
    /// Tokens behind the logits thresholds (0: no compact file had logits).
    pub logits_tokens: u64,
    /// The leave-one-prompt-out estimate (compact files of at least two prompts only).
    pub false_failures: Option<FalseFailureEstimate>,
    /// `--false-failure-rate` could not be met by any headroom tried.
    pub target_unmet: bool,
}

/// Checks the seed CSV cases of `model` in `dir`: every record has both metric files (else
/// [`ThresholdsError::PartialCase`]); returns the cases whose records are not a whole forward
/// (embedding to head, every module of every layer up to the highest named, each as often as the
/// others), with their first missing keys.
fn check_cases(dir: &std::path::Path, model: &str) -> Result<Vec<(String, Vec<String>)>, ThresholdsError> {
    use crate::hooks::ModuleKey;
    let mut cases: BTreeMap<String, [std::collections::BTreeSet<String>; 2]> = BTreeMap::new();
    for path in glob_files(dir, model, "", ".csv")? {
        let name = file_name(&path);
        let Some(prefix) = csv_prefix(&name) else { continue };
        for (i, metric) in SeedMetric::ALL.into_iter().enumerate() {
            if name.ends_with(&format!(".{}.csv", metric.name())) {
                cases.entry(prefix.to_string()).or_default()[i].insert(python_layer_name(&name, metric.name()));
            }
        }
    }
    let names = SeedMetric::ALL.map(|m| m.name());
    let mut incomplete = Vec::new();
    for (prefix, sets) in cases {
        if !sets[0].is_empty() && !sets[1].is_empty() {
            for (has, other) in [(0, 1), (1, 0)] {
                if let Some(record) = sets[has].difference(&sets[other]).next() {
                    return Err(ThresholdsError::PartialCase { prefix, file_base: dir.to_path_buf(), record: record.clone(), has: names[has], lacks: names[other] });
                }
            }
        }
        let records = if sets[0].is_empty() { &sets[1] } else { &sets[0] };
        let mut counts: HashMap<ModuleKey, usize> = HashMap::new();
        for record in records {
            let Ok(key) = strip_iter(record).0.parse::<ModuleKey>() else { continue };
            *counts.entry(key).or_default() += 1;
        }
        let layers = counts.keys().filter_map(|k| match k { ModuleKey::Layer(i, _) => Some(i + 1), _ => None }).max().unwrap_or(0);
        let expected = ModuleKey::forward_order(layers, counts.contains_key(&ModuleKey::Model));
        let calls = counts.values().copied().max().unwrap_or(0);
        let missing: Vec<String> = expected.iter().filter(|k| counts.get(k).copied().unwrap_or(0) < calls).take(3).map(|k| k.to_string()).collect();
        if !missing.is_empty() {
            incomplete.push((prefix, missing));
        }
    }
    Ok(incomplete)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Reduction {
    /// `np.linalg.norm(np.nan_to_num(v))`.
    Norm,
    /// `np.mean(np.nan_to_num(v))`.
    Mean,
    /// Neither: the metric's object stays empty.
    None,
}

struct MetricSpec {
    name: String,
    /// The first two `_` words (layer mode), the part globbed and stripped from file names.
    file_metric: String,
    reduction: Reduction,
}

impl MetricSpec {
    fn new(metric: &str) -> Self {
        let file_metric = metric.split('_').take(2).collect::<Vec<_>>().join("_");
        let reduction = if metric.contains("abs_diff") {
            Reduction::Norm
        } else if metric.contains("avg") || metric.contains("mean") {
            Reduction::Mean
        } else {
            Reduction::None
        };
        MetricSpec { name: metric.to_string(), file_metric, reduction }
    }
}

/// `np.nan_to_num`: NaN -> 0, ±inf -> ±f64::MAX.
fn nan_to_num(v: f64) -> f64 {
    if v.is_nan() {
        0.0
    } else if v.is_infinite() {
        f64::MAX.copysign(v)
    } else {
        v
    }
}

/// Per layer key (first-seen order): a compensated sum and a count.
#[derive(Default)]
struct Pool {
    keys: Vec<String>,
    index: HashMap<String, usize>,
    sums: Vec<(CompensatedSum, u64)>,
}

impl Pool {
    fn slot(&mut self, key: &str) -> &mut (CompensatedSum, u64) {
        let i = match self.index.get(key) {
            Some(&i) => i,
            None => {
                self.index.insert(key.to_string(), self.keys.len());
                self.keys.push(key.to_string());
                self.sums.push((CompensatedSum::new(), 0));
                self.keys.len() - 1
            }
        };
        &mut self.sums[i]
    }

    fn add_values(&mut self, key: &str, values: &[f64], reduction: Reduction) {
        let (sum, count) = self.slot(key);
        for &v in values {
            let v = nan_to_num(v);
            sum.add(if reduction == Reduction::Norm { v * v } else { v });
        }
        *count += values.len() as u64;
    }

    fn add_sum(&mut self, key: &str, partial: f64, values: u64) {
        let (sum, count) = self.slot(key);
        sum.add(partial);
        // `values` comes from a file: thousands of records of 2^53 elements would overflow.
        *count = count.saturating_add(values);
    }

    fn finish(self, reduction: Reduction) -> Vec<(String, f64)> {
        self.keys
            .into_iter()
            .zip(self.sums)
            .map(|(k, (sum, count))| {
                let v = match reduction {
                    Reduction::Norm => sum.value().sqrt(),
                    _ => sum.value() / count as f64,
                };
                (k, v)
            })
            .collect()
    }
}

/// One shape's layer keys in first-seen order and their observations.
type ShapeLayers = (Vec<String>, HashMap<String, Observations>);

/// Per (batch, seq), per layer key in first-seen order.
#[derive(Default)]
struct ShapePool {
    shapes: BTreeMap<(u64, u64), ShapeLayers>,
}

impl ShapePool {
    fn at(&mut self, batch: u64, seq: u64, key: &str) -> &mut Observations {
        let (order, map) = self.shapes.entry((batch, seq)).or_default();
        if !map.contains_key(key) {
            order.push(key.to_string());
        }
        map.entry(key.to_string()).or_default()
    }

    fn finish(mut self, p: f64, report: &mut ThresholdsReport) -> PerShapeThresholds {
        let mut shapes = Vec::new();
        for ((batch_size, seq_length), (order, map)) in std::mem::take(&mut self.shapes) {
            let layers = order
                .into_iter()
                .map(|k| {
                    let t = map.get(&k).map(|o| o.thresholds(p)).unwrap_or_default();
                    if t.nonfinite_observations > 0 {
                        report.nonfinite.push((batch_size, seq_length, k.clone()));
                    }
                    (k, t)
                })
                .collect();
            shapes.push(ShapeThresholds { batch_size, seq_length, layers });
        }
        PerShapeThresholds { percentile: p, shapes, logits: None, headroom: 1.0, false_failures: None }
    }
}

/// Computes one model's thresholds from `opts.file_base` (nothing is written).
pub fn compute(model: &str, opts: &ThresholdsOptions, progress: &dyn Progress) -> Result<(ThresholdsFile, ThresholdsReport), ThresholdsError> {
    if !(0.0..=100.0).contains(&opts.percentile) {
        return Err(ThresholdsError::BadPercentile(opts.percentile));
    }
    if let Some(r) = opts.false_failure_rate.filter(|r| !(*r > 0.0 && *r < 1.0)) {
        return Err(ThresholdsError::BadRate(r));
    }
    let model = file_model_id(model);
    let mut report = ThresholdsReport { model: model.clone(), ..Default::default() };
    if !opts.layer_io {
        let file = whole_model(&model, opts, progress, &mut report)?;
        return Ok((file, report));
    }
    let specs: Vec<MetricSpec> = opts.metrics.iter().map(|m| MetricSpec::new(m)).collect();
    // Every CSV file once, with the metrics whose glob matched it.
    let mut csv: BTreeMap<String, (PathBuf, Vec<usize>)> = BTreeMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let files = glob_files(&opts.file_base, &model, &spec.file_metric, ".csv")?;
        report.files_per_metric.push((spec.name.clone(), files.len()));
        for path in files {
            csv.entry(file_name(&path)).or_insert_with(|| (path, Vec::new())).1.push(i);
        }
    }
    let mut csv: Vec<(String, PathBuf, Vec<usize>)> = csv.into_iter().map(|(n, (p, m))| (n, p, m)).collect();
    csv.sort_by(|a, b| natural_cmp(&a.0, &b.0));
    report.incomplete = check_cases(&opts.file_base, &model)?;
    let compact = compact_files(&opts.file_base, &model)?;
    for path in &compact {
        // The case from the header, not the name: tagged files (`{prefix}_{tag}`) are that case too.
        let prefix = CompactFile::read_case(path)?.prefix();
        if csv.iter().any(|(name, _, _)| csv_prefix(name) == Some(prefix.as_str())) {
            return Err(ThresholdsError::DuplicateCase { prefix, file_base: opts.file_base.clone(), compact: path.clone() });
        }
    }
    report.compact_files = compact.len();
    progress.start((csv.len() + compact.len()) as u64);

    let mut pools: Vec<Pool> = specs.iter().map(|_| Pool::default()).collect();
    let mut shapes = ShapePool::default();
    let mut logits = LogitsPool::default();
    let (mut by_prompt, mut next_prompt) = (PromptObservations::default(), 0usize);
    for (name, path, metric_indices) in &csv {
        let file = read_seed_csv(path)?;
        for &i in metric_indices {
            let spec = &specs[i];
            if spec.reduction == Reduction::None {
                continue;
            }
            let (key, _) = strip_iter(&python_layer_name(name, &spec.file_metric));
            pools[i].add_values(&key, &file.values, spec.reduction);
        }
        let kind = SeedMetric::ALL.into_iter().find(|m| name.ends_with(&format!(".{}.csv", m.name())));
        let case = csv_prefix(name).and_then(SeedCase::parse_prefix);
        if let (Some(kind), Some(case)) = (kind, case) {
            if !file.values.is_empty() {
                let (key, _) = strip_iter(&python_layer_name(name, kind.name()));
                let header = file.header.as_ref();
                let len = observation_len(file.values.len(), header.map(|h| h.metric_shape.as_slice()), header.map_or(0, |h| h.gpu_shape.len()));
                let observations = shapes.at(case.batch_size, case.seq_length, &key);
                for chunk in file.values.chunks(len) {
                    match kind {
                        SeedMetric::AbsDiff => observations.add_abs_diff_values(chunk),
                        SeedMetric::CosSim => observations.add_cos_values(chunk),
                    }
                }
            }
        }
        progress.step(name);
    }
    for path in &compact {
        let file = CompactFile::read(path)?;
        for record in &file.records {
            let (key, _) = strip_iter(&record.key);
            for (i, spec) in specs.iter().enumerate() {
                match (spec.file_metric.as_str(), spec.reduction) {
                    (_, Reduction::None) => {}
                    // The seed's norm of nan_to_num(abs_diff): NaN -> 0, any inf -> +inf.
                    ("abs_diff", Reduction::Norm) => pools[i].add_sum(&key, record.summary.seed_abs_diff_sq_sum(), record.summary.elements),
                    // Unreachable through the seed's naming (a metric named abs_diff* reduces by
                    // norm); kept total: the mean of the values as they are.
                    ("abs_diff", Reduction::Mean) => pools[i].add_sum(&key, record.summary.abs_diff_sum, record.summary.elements),
                    ("cos_sim", reduction) => pools[i].add_values(&key, &record.cos_sim, reduction),
                    _ => {}
                }
            }
            for (j, item) in record.items.iter().enumerate() {
                shapes.at(file.case.batch_size, file.case.seq_length, &key).add_summary(item);
                by_prompt.add(file.case.batch_size, file.case.seq_length, &key, next_prompt.saturating_add(j), item.abs_diff_l2(), item.cos_mean());
            }
        }
        // A file's batch_size is the user's: a count past usize would number no prompt.
        next_prompt = usize::try_from(file.case.batch_size).ok().and_then(|b| next_prompt.checked_add(b)).ok_or_else(|| ThresholdsError::Schema {
            path: Some(path.clone()),
            problem: format!("case batch_size {} is too large to number its prompts", file.case.batch_size),
        })?;
        if let Some(l) = &file.logits {
            let tokens = l.tokens.iter().map(|t| (t.ce, t.diff_mean, t.kl));
            logits.add(tokens, l.top_k).map_err(|problem| ThresholdsError::Schema { path: Some(path.clone()), problem })?;
        }
        progress.step(&file_name(path));
    }
    progress.finish();

    let mut metrics = Vec::new();
    for (spec, pool) in specs.iter().zip(pools) {
        let layers = if spec.reduction == Reduction::None { Vec::new() } else { pool.finish(spec.reduction) };
        report.layers_per_metric.push((spec.name.clone(), layers.len()));
        metrics.push((spec.name.clone(), MetricThresholds::Layers(layers)));
    }
    let mut per_shape = shapes.finish(opts.percentile, &mut report);
    per_shape.logits = logits.thresholds(opts.percentile);
    let estimate = match opts.false_failure_rate {
        Some(target) => {
            let (e, met) = choose_headroom(&by_prompt, opts.percentile, opts.margins, target);
            report.target_unmet = !met;
            e
        }
        None => by_prompt.estimate(opts.percentile, 1.0, opts.margins),
    };
    if estimate.prompts > 0 {
        per_shape.headroom = estimate.headroom;
        for shape in &mut per_shape.shapes {
            for (_, t) in &mut shape.layers {
                *t = t.widened(estimate.headroom);
            }
        }
        // The logits thresholds are maxima over the baseline's tokens too, and a case fails at 1%
        // of its tokens: one unseen token past them fails a case of fewer than 100. They get the
        // same headroom (`diff_mean` and `kl`; `ce`, mostly the top-k entropy, is left as derived).
        if let Some(l) = per_shape.logits.as_mut() {
            l.diff_mean *= estimate.headroom;
            l.kl *= estimate.headroom;
        }
        per_shape.false_failures = Some(estimate.to_py_json());
        report.false_failures = Some(estimate);
    }
    report.logits_tokens = per_shape.logits.map_or(0, |l| l.tokens);
    Ok((ThresholdsFile { model_id: model, metrics, per_shape: Some(per_shape), other: Vec::new() }, report))
}

/// Without `--layer_io`: the 99th percentile of all values of each metric's files.
fn whole_model(model: &str, opts: &ThresholdsOptions, progress: &dyn Progress, report: &mut ThresholdsReport) -> Result<ThresholdsFile, ThresholdsError> {
    let mut per_metric = Vec::new();
    for metric in &opts.metrics {
        let files = glob_files(&opts.file_base, model, metric, ".csv")?;
        report.files_per_metric.push((metric.clone(), files.len()));
        per_metric.push(files);
    }
    progress.start(per_metric.iter().map(|f| f.len() as u64).sum());
    let mut metrics = Vec::new();
    for (metric, files) in opts.metrics.iter().zip(per_metric) {
        let mut values = Vec::new();
        for path in &files {
            values.extend(read_values(path, 1)?.1);
            progress.step(&file_name(path));
        }
        let value = percentile_linear(&values, 99.0).ok_or_else(|| ThresholdsError::NoValues {
            model: model.to_string(),
            metric: metric.clone(),
            pattern: format!("{model}*{metric}*.csv"),
            file_base: opts.file_base.clone(),
        })?;
        metrics.push((metric.clone(), MetricThresholds::Scalar(value)));
    }
    progress.finish();
    Ok(ThresholdsFile { model_id: model.to_string(), metrics, per_shape: None, other: Vec::new() })
}

/// Computes and writes `{output_path}/{model}-thresholds.json` for every model of `opts`.
pub fn run(opts: &ThresholdsOptions, progress: &dyn Progress) -> Result<Vec<(PathBuf, ThresholdsReport)>, ThresholdsError> {
    let mut out = Vec::new();
    for model in &opts.models {
        let (file, report) = compute(model, opts, progress)?;
        let path = file.write(&opts.output_path)?;
        out.push((path, report));
    }
    Ok(out)
}
