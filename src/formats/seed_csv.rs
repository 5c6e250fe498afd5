//! The per-layer CSV files of `generate_layers_metrics.py` (spec §3), written and read.
//!
//! File: `{output_path}/{prefix}--{key}.{abs_diff|cos_sim}.csv`, `prefix` the case's readable
//! prefix ([`SeedCase`]) and `key` the module key without brackets. Body: three header lines,
//! then one value per line, row-major, in Python float repr (`f"{t}"` of `tensor.tolist()`):
//!
//! ```text
//! abs_diff
//! GPU shape torch.Size([1, 64, 4096]) CPU shape torch.Size([1, 64, 4096])
//! Metric shape torch.Size([1, 64, 4096])
//! 0.0001220703125
//! ```
//!
//! "GPU shape" is the target's tensor shape, "CPU shape" the reference's, "Metric shape" the
//! metric tensor's (for `cos_sim` the shape without the last dim). The seed skips a file that
//! exists; we never overwrite one either, but say so ([`SeedCsvError::Write`] with
//! [`AtomicWriteError::Exists`]), and write through a temporary file renamed into place.
//!
//! Readers accept files written by us or by Python: [`read_seed_csv`] parses the header when it
//! can and reads values as Python's `float()` does. A file with fewer lines than its header has
//! no values (what `get_thresholds.py` does on `StopIteration`); a line that is not a float is an
//! error naming the file and line (Python raises `ValueError` there).

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use layercheck_suite::atomic::{write_file, AtomicWriteError, Replace};
use super::case::{file_key, SeedCase};
use super::py_float;
use crate::metrics::Comparison;

/// Values per chunk converted and formatted at once.
const WRITE_CHUNK: i64 = 1 << 20;

/// Why a seed CSV file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SeedCsvError {
    /// Writing failed (or the file exists).
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    /// Reading failed.
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// A value line is not a number.
    #[error("{path}:{line}: {text:?} is not a number\n(hint: a seed CSV file has {header_lines} header lines, then one float per line)")]
    BadValue { path: PathBuf, line: usize, text: String, header_lines: usize },
    /// The values tensor could not be read.
    #[error("could not read the values to write to {path}: {source}")]
    Torch { path: PathBuf, source: tch::TchError },
}

/// The two element metrics the seed writes per layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeedMetric {
    /// `abs_diff`: `|reference - target|` per element.
    AbsDiff,
    /// `cos_sim`: cosine similarity per row (token).
    CosSim,
}

impl SeedMetric {
    /// Both, in the seed's order.
    pub const ALL: [SeedMetric; 2] = [SeedMetric::AbsDiff, SeedMetric::CosSim];

    /// The name in file names and header lines.
    pub fn name(self) -> &'static str {
        match self {
            SeedMetric::AbsDiff => "abs_diff",
            SeedMetric::CosSim => "cos_sim",
        }
    }
}

impl fmt::Display for SeedMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SeedMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "abs_diff" => Ok(SeedMetric::AbsDiff),
            "cos_sim" => Ok(SeedMetric::CosSim),
            other => Err(format!("unknown seed metric \"{other}\" (expected abs_diff or cos_sim)")),
        }
    }
}

/// The three header lines of a seed CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedCsvHeader {
    /// Line 1: the metric name.
    pub metric: String,
    /// The target's ("GPU") tensor shape.
    pub gpu_shape: Vec<i64>,
    /// The reference's ("CPU") tensor shape.
    pub cpu_shape: Vec<i64>,
    /// The metric tensor's shape.
    pub metric_shape: Vec<i64>,
}

impl SeedCsvHeader {
    /// The header lines, without line ends.
    pub fn lines(&self) -> [String; 3] {
        [
            self.metric.clone(),
            format!("GPU shape {} CPU shape {}", torch_size(&self.gpu_shape), torch_size(&self.cpu_shape)),
            format!("Metric shape {}", torch_size(&self.metric_shape)),
        ]
    }

    /// Parses header lines (line ends allowed); `None` when they are not of the seed's form.
    pub fn parse(lines: &[String]) -> Option<SeedCsvHeader> {
        let [metric, shapes, metric_shape] = lines else { return None };
        let shapes = shapes.trim_end().strip_prefix("GPU shape ")?;
        let (gpu, cpu) = shapes.split_once(" CPU shape ")?;
        Some(SeedCsvHeader {
            metric: metric.trim_end().to_string(),
            gpu_shape: parse_torch_size(gpu)?,
            cpu_shape: parse_torch_size(cpu)?,
            metric_shape: parse_torch_size(metric_shape.trim_end().strip_prefix("Metric shape ")?)?,
        })
    }
}

/// `repr(torch.Size(shape))`: `torch.Size([1, 64, 4096])`, `torch.Size([])`.
pub fn torch_size(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("torch.Size([{}])", dims.join(", "))
}

/// Parses `torch.Size([1, 64, 4096])`.
pub fn parse_torch_size(text: &str) -> Option<Vec<i64>> {
    let inner = text.trim().strip_prefix("torch.Size([")?.strip_suffix("])")?;
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|d| d.trim().parse::<i64>().ok()).collect()
}

/// The seed's file name of `key`'s `metric` in `case`: `{prefix}--{key}.{metric}.csv`, brackets
/// dropped from the key.
pub fn seed_csv_file_name(case: &SeedCase, key: &str, metric: SeedMetric) -> String {
    format!("{}--{}.{}.csv", case.prefix(), file_key(key), metric.name())
}

/// `output_path` joined with [`seed_csv_file_name`].
pub fn seed_csv_path(output_path: &Path, case: &SeedCase, key: &str, metric: SeedMetric) -> PathBuf {
    output_path.join(seed_csv_file_name(case, key, metric))
}

/// Writes a seed CSV file of `values` (any float tensor, written row-major as the f64 each value
/// converts to). Fails if `path` exists.
pub fn write_seed_csv(path: &Path, header: &SeedCsvHeader, values: &Tensor) -> Result<(), SeedCsvError> {
    let torch = |source| SeedCsvError::Torch { path: path.to_path_buf(), source };
    let flat = values.f_to_device(Device::Cpu).map_err(torch)?.f_reshape([-1]).map_err(torch)?;
    let n = flat.numel() as i64;
    let mut chunk = Vec::new();
    // Convert chunk by chunk inside the writer so memory stays at one chunk.
    let mut failure = None;
    let result = write_file(path, Replace::Never, |w| {
        write_header(w, header)?;
        let mut text = Vec::new();
        let mut parts = Vec::new();
        let mut start = 0;
        while start < n {
            let len = WRITE_CHUNK.min(n - start);
            match chunk_f64(&flat, start, len, &mut chunk) {
                Ok(()) => {}
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("libtorch failed"));
                }
            }
            format_values(&chunk, &mut text, &mut parts);
            for part in &parts {
                w.write_all(part)?;
            }
            start += len;
        }
        Ok(())
    });
    if let Some(e) = failure {
        return Err(torch(e));
    }
    Ok(result?)
}

/// Writes both seed CSV files of one layer, as the seed does for a plain tensor output: the
/// target's shape as "GPU shape", the reference's as "CPU shape". Returns the two paths
/// (`abs_diff`, `cos_sim`). Fails, writing nothing new, if either exists.
pub fn write_layer_csvs(
    output_path: &Path,
    case: &SeedCase,
    key: &str,
    reference_shape: &[i64],
    target_shape: &[i64],
    comparison: &Comparison,
) -> Result<[PathBuf; 2], SeedCsvError> {
    let abs_path = seed_csv_path(output_path, case, key, SeedMetric::AbsDiff);
    let cos_path = seed_csv_path(output_path, case, key, SeedMetric::CosSim);
    for p in [&abs_path, &cos_path] {
        if p.exists() {
            return Err(AtomicWriteError::Exists { path: p.clone() }.into());
        }
    }
    for (path, metric, tensor) in [
        (&abs_path, SeedMetric::AbsDiff, &comparison.abs_diff),
        (&cos_path, SeedMetric::CosSim, &comparison.cos_sim),
    ] {
        let header = SeedCsvHeader {
            metric: metric.name().to_string(),
            gpu_shape: target_shape.to_vec(),
            cpu_shape: reference_shape.to_vec(),
            metric_shape: tensor.size(),
        };
        write_seed_csv(path, &header, tensor)?;
    }
    Ok([abs_path, cos_path])
}

fn write_header(w: &mut dyn Write, header: &SeedCsvHeader) -> std::io::Result<()> {
    for line in header.lines() {
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Formats `values` as lines of Python float repr into `parts` (in order), on all cores for large
/// chunks; `text` is scratch for the small case.
fn format_values(values: &[f64], text: &mut Vec<u8>, parts: &mut Vec<Vec<u8>>) {
    const PART: usize = 1 << 15;
    let format = |chunk: &[f64], out: &mut Vec<u8>| {
        out.clear();
        for &v in chunk {
            py_float::write_repr(out, v);
            out.push(b'\n');
        }
    };
    if values.len() <= PART {
        format(values, text);
        parts.clear();
        parts.push(std::mem::take(text));
        return;
    }
    use rayon::prelude::*;
    let n = values.len().div_ceil(PART);
    parts.resize_with(n, Vec::new);
    parts.truncate(n);
    parts.par_iter_mut().zip(values.par_chunks(PART)).for_each(|(out, chunk)| format(chunk, out));
}

fn chunk_f64(flat: &Tensor, start: i64, len: i64, out: &mut Vec<f64>) -> Result<(), tch::TchError> {
    let part = flat.f_narrow(0, start, len)?.f_to_kind(Kind::Double)?.f_contiguous()?;
    out.resize(len as usize, 0.0);
    part.f_copy_data(out, len as usize)
}

/// A seed CSV file as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedCsvFile {
    /// The header lines as found (fewer than three if the file is that short).
    pub header_lines: Vec<String>,
    /// The parsed header, when it is of the seed's form.
    pub header: Option<SeedCsvHeader>,
    /// The values, in file order.
    pub values: Vec<f64>,
}

/// Reads a per-layer seed CSV file (three header lines).
pub fn read_seed_csv(path: &Path) -> Result<SeedCsvFile, SeedCsvError> {
    let (header_lines, values) = read_values(path, 3)?;
    let header = SeedCsvHeader::parse(&header_lines);
    Ok(SeedCsvFile { header_lines, header, values })
}

/// Reads a metric file with `header_lines` header lines (3 for per-layer files, 1 for the seed's
/// whole-model metric files) and one float per line after them. Values are parsed in blocks of
/// 32 MiB on all cores.
pub fn read_values(path: &Path, header_lines: usize) -> Result<(Vec<String>, Vec<f64>), SeedCsvError> {
    read_values_in_blocks(path, header_lines, 32 << 20, 1 << 20)
}

fn read_values_in_blocks(path: &Path, header_lines: usize, block_size: usize, part_size: usize) -> Result<(Vec<String>, Vec<f64>), SeedCsvError> {
    use std::io::Read;
    let read = |source| SeedCsvError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(read)?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut header = Vec::with_capacity(header_lines);
    let mut line = Vec::new();
    while header.len() < header_lines {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(read)? == 0 {
            return Ok((header, Vec::new()));
        }
        header.push(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_string());
    }
    let mut values = Vec::with_capacity((size / 12) as usize);
    let mut lines_before = header_lines;
    // Most metric files are a few kB: a block no larger than the file (a generate-mode folder
    // holds ~100k of them, and zero-filling 32 MiB for each would dominate reading).
    let block_size = block_size.min(usize::try_from(size).unwrap_or(usize::MAX).saturating_add(1).max(1 << 16));
    let mut block: Vec<u8> = Vec::with_capacity(block_size + (1 << 16));
    loop {
        let have = block.len();
        block.resize(have + block_size, 0);
        let mut filled = have;
        while filled < block.len() {
            let n = reader.read(&mut block[filled..]).map_err(read)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        let eof = filled < block.len();
        block.truncate(filled);
        // Whole lines only, unless this is the end.
        let cut = if eof { block.len() } else { block.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1) };
        parse_block(&block[..cut], part_size, &mut values).map_err(|(line_in_block, text)| SeedCsvError::BadValue {
            path: path.to_path_buf(),
            line: lines_before + line_in_block,
            text,
            header_lines,
        })?;
        lines_before += block[..cut].iter().filter(|&&c| c == b'\n').count();
        block.drain(..cut);
        if eof {
            break;
        }
    }
    Ok((header, values))
}

/// Parses the lines of `block` (a trailing line without a newline included) onto `out`; on a bad
/// line returns its 1-based number within the block and its text.
fn parse_block(block: &[u8], part_size: usize, out: &mut Vec<f64>) -> Result<(), (usize, String)> {
    use rayon::prelude::*;
    // Split at newlines into parts of about PART bytes.
    let mut bounds = vec![0];
    while let Some(&last) = bounds.last() {
        if last >= block.len() {
            break;
        }
        let target = (last + part_size).min(block.len());
        let end = if target == block.len() { target } else { block[target..].iter().position(|&c| c == b'\n').map_or(block.len(), |i| target + i + 1) };
        bounds.push(end);
    }
    let parsed: Vec<Result<Vec<f64>, (usize, String)>> = bounds
        .par_windows(2)
        .map(|w| {
            let part = &block[w[0]..w[1]];
            let mut values = Vec::with_capacity(part.len() / 12);
            for (i, line) in part.strip_suffix(b"\n").unwrap_or(part).split(|&c| c == b'\n').enumerate() {
                match std::str::from_utf8(line).ok().and_then(py_float::parse) {
                    Some(v) => values.push(v),
                    None => return Err((i + 1, String::from_utf8_lossy(line).trim_end().to_string())),
                }
            }
            Ok(values)
        })
        .collect();
    let mut lines_before = 0;
    for part in parsed {
        match part {
            Ok(values) => {
                lines_before += values.len();
                out.extend_from_slice(&values);
            }
            Err((i, text)) => return Err((lines_before + i, text)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::compare;

    #[test]
    fn header_lines_are_the_seed_ones_and_parse_back() {
        let h = SeedCsvHeader { metric: "abs_diff".into(), gpu_shape: vec![1, 64, 4096], cpu_shape: vec![1, 64, 4096], metric_shape: vec![1, 64, 4096] };
        let lines = h.lines();
        assert_eq!(lines[0], "abs_diff");
        assert_eq!(lines[1], "GPU shape torch.Size([1, 64, 4096]) CPU shape torch.Size([1, 64, 4096])");
        assert_eq!(lines[2], "Metric shape torch.Size([1, 64, 4096])");
        assert_eq!(SeedCsvHeader::parse(&lines), Some(h));
        assert_eq!(torch_size(&[]), "torch.Size([])");
        assert_eq!(parse_torch_size("torch.Size([])"), Some(vec![]));
        assert_eq!(parse_torch_size("torch.Size([5])"), Some(vec![5]));
        assert_eq!(parse_torch_size("Size([5])"), None);
    }

    #[test]
    fn file_names_follow_the_seed() {
        let case = SeedCase::new("ibm-granite/granite-3.3-8b-instruct", 128, 1, 64);
        assert_eq!(
            seed_csv_file_name(&case, "model.base_model.layers[7].ln", SeedMetric::AbsDiff),
            "ibm-granite--granite-3.3-8b-instruct_max-new-tokens-128_batch-size-1_seq-length-64_dtype-float16--model.base_model.layers7.ln.abs_diff.csv"
        );
        assert_eq!(
            seed_csv_file_name(&case, "model.base_model.layers8.attn.dense.iter-3", SeedMetric::CosSim),
            "ibm-granite--granite-3.3-8b-instruct_max-new-tokens-128_batch-size-1_seq-length-64_dtype-float16--model.base_model.layers8.attn.dense.iter-3.cos_sim.csv"
        );
    }

    #[test]
    fn writes_exact_python_text_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.abs_diff.csv");
        let values = Tensor::from_slice(&[0.0f32, 1.0, 1e-6, 0.1, f32::NAN, f32::INFINITY, 1.0 / 8192.0]).view([1, 7]);
        let header = SeedCsvHeader { metric: "abs_diff".into(), gpu_shape: vec![1, 7], cpu_shape: vec![1, 7], metric_shape: vec![1, 7] };
        write_seed_csv(&path, &header, &values).unwrap();
        // The body lines are what CPython prints for float(np.float32(v)).
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "abs_diff\nGPU shape torch.Size([1, 7]) CPU shape torch.Size([1, 7])\nMetric shape torch.Size([1, 7])\n\
             0.0\n1.0\n9.999999974752427e-07\n0.10000000149011612\nnan\ninf\n0.0001220703125\n"
        );
        let back = read_seed_csv(&path).unwrap();
        assert_eq!(back.header, Some(header.clone()));
        assert_eq!(back.values.len(), 7);
        assert_eq!(back.values[2], 1e-6f32 as f64);
        assert!(back.values[4].is_nan());
        let again = write_seed_csv(&path, &header, &values).unwrap_err();
        assert!(matches!(again, SeedCsvError::Write(AtomicWriteError::Exists { .. })), "{again}");
    }

    #[test]
    fn half_values_print_as_python_prints_their_f64() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.csv");
        let values = Tensor::from_slice(&[1e-6f32, 65504.0, 0.1]).to_kind(Kind::Half);
        let header = SeedCsvHeader { metric: "cos_sim".into(), gpu_shape: vec![3], cpu_shape: vec![3], metric_shape: vec![3] };
        write_seed_csv(&path, &header, &values).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // float(torch.tensor([1e-6, 65504.0, 0.1], dtype=torch.float16)[i]) in CPython.
        assert!(text.ends_with("\n1.0132789611816406e-06\n65504.0\n0.0999755859375\n"), "{text}");
    }

    #[test]
    fn layer_csvs_use_target_as_gpu_and_reference_as_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let case = SeedCase::new("org/m", 8, 1, 2);
        let r = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([1, 2, 3]);
        let t = (&r * 1.5).to_kind(Kind::Half);
        let c = compare(&r, &t).unwrap();
        let [a, s] = write_layer_csvs(dir.path(), &case, "model.head", &[1, 2, 3], &[1, 2, 3], &c).unwrap();
        let abs = read_seed_csv(&a).unwrap();
        assert_eq!(abs.header_lines[0], "abs_diff");
        assert_eq!(abs.values, vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
        let cos = read_seed_csv(&s).unwrap();
        assert_eq!(cos.header.unwrap().metric_shape, vec![1, 2]);
        assert_eq!(cos.values.len(), 2);
        assert!(write_layer_csvs(dir.path(), &case, "model.head", &[1, 2, 3], &[1, 2, 3], &c).is_err());
    }

    #[test]
    fn values_across_blocks_and_parts_keep_order_and_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.csv");
        let mut text = String::from("h1\nh2\nh3\n");
        for i in 0..1000 {
            text.push_str(&format!("{}\n", py_float::repr(i as f64 * 0.001)));
        }
        std::fs::write(&path, &text).unwrap();
        for (block, part) in [(7, 3), (64, 16), (1000, 50), (1 << 20, 1 << 10)] {
            let (h, v) = read_values_in_blocks(&path, 3, block, part).unwrap();
            assert_eq!(h, ["h1", "h2", "h3"]);
            assert_eq!(v, (0..1000).map(|i| i as f64 * 0.001).collect::<Vec<_>>(), "block {block} part {part}");
        }
        text.push_str("oops\n");
        std::fs::write(&path, &text).unwrap();
        for (block, part) in [(7, 3), (64, 16), (1 << 20, 1 << 10)] {
            let err = read_values_in_blocks(&path, 3, block, part).unwrap_err().to_string();
            assert!(err.contains("many.csv:1004: \"oops\""), "{err}");
        }
    }

    #[test]
    fn short_files_have_no_values_and_bad_lines_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.csv");
        std::fs::write(&short, "abs_diff\nGPU shape torch.Size([1]) CPU shape torch.Size([1])\n").unwrap();
        let f = read_seed_csv(&short).unwrap();
        assert_eq!((f.header_lines.len(), f.values.len(), f.header), (2, 0, None));
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "a\nb\nc\n1.0\nx\n").unwrap();
        let err = read_seed_csv(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.csv:5") && err.contains("\"x\""), "{err}");
        let no_newline = dir.path().join("nn.csv");
        std::fs::write(&no_newline, "a\nb\nc\n1.0\n-inf").unwrap();
        assert_eq!(read_seed_csv(&no_newline).unwrap().values, vec![1.0, f64::NEG_INFINITY]);
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// `cargo test --lib seed_csv_write_speed -- --ignored --nocapture`: lines per second.
    #[test]
    #[ignore]
    fn seed_csv_write_speed() {
        let dir = tempfile::tempdir().unwrap();
        tch::manual_seed(0);
        let n = 8_000_000i64;
        let values = Tensor::randn([n], (Kind::Float, Device::Cpu)).abs() * 1e-3;
        let header = SeedCsvHeader { metric: "abs_diff".into(), gpu_shape: vec![n], cpu_shape: vec![n], metric_shape: vec![n] };
        let start = std::time::Instant::now();
        write_seed_csv(&dir.path().join("x.csv"), &header, &values).unwrap();
        let w = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        let back = read_seed_csv(&dir.path().join("x.csv")).unwrap();
        let r = start.elapsed().as_secs_f64();
        assert_eq!(back.values.len(), n as usize);
        println!("write {:.1} M lines/s, read {:.1} M lines/s", n as f64 / w / 1e6, n as f64 / r / 1e6);
    }
}
