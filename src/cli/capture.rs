//! `layercheck capture`: run a model on a target with hooks on every module and write every
//! captured output, and the logits, to one safetensors file.

use std::path::{Path, PathBuf};

use layercheck::capture::{Mode, Recorder};
use layercheck_suite::atomic::Replace;
use layercheck::compute::target_listener::Fault;
use layercheck::runner::builtin;
use layercheck::runner::request::Request;
use layercheck::inputs::{read_prompts, TokenBatch, Tokenizer};
use layercheck::model::{AttentionMask, DecoderModel};
use layercheck::run::{self, RunSpec};
use layercheck::target::Target;

#[derive(Debug, clap::Args)]
pub struct CaptureArgs {
    /// HF model folder (config.json, safetensors, tokenizer.json).
    #[arg(long, required_unless_present = "request")]
    model_path: Option<PathBuf>,
    /// Answer a layercheck-request/1 file instead (what a `command` target's program is given):
    /// its model, ids, mode, forced tokens, feed and keys; the capture goes to --out.
    #[arg(long, conflicts_with_all = ["model_path", "input_ids", "prompts", "seq_length", "attention_mask", "mode", "max_new_tokens", "capture_inputs"])]
    request: Option<PathBuf>,
    /// With --request: perturb one module's output as a fault target does (KEY:AMPLITUDE, e.g.
    /// model.base_model.layers1.attn.dense:0.05), to see a faulty device.
    #[arg(long, requires = "request", value_name = "KEY:AMPLITUDE")]
    fault: Option<String>,
    /// Where and in what precision to run: cpu-f32, cpu-f16, cpu-bf16, cuda-f16, cuda-bf16.
    #[arg(long, default_value = "cpu-f32")]
    target: Target,
    #[command(flatten)]
    input: InputArgs,
    /// Sequence length prompts are left-padded to with id 0 (default: the longest prompt).
    #[arg(long, requires = "prompts", value_parser = super::positive)]
    seq_length: Option<usize>,
    /// attend-pads (the seed's way: pads attended, positions 0..S-1) or proper (pads masked).
    #[arg(long, default_value = "attend-pads")]
    attention_mask: AttentionMask,
    /// model-forward (one pass) or generate (greedy decoding with a KV cache).
    #[arg(long, default_value = "model-forward")]
    mode: Mode,
    /// New tokens in generate mode.
    #[arg(long, default_value_t = 8, value_parser = super::positive)]
    max_new_tokens: usize,
    /// Also capture each module's input (stored as `input:{key}`).
    #[arg(long)]
    capture_inputs: bool,
    /// Output safetensors file; never one inside the model folder.
    #[arg(long)]
    out: PathBuf,
    /// Replace --out if it exists (by default an existing file is an error).
    #[arg(long)]
    force: bool,
}

/// Where the token ids come from.
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
pub struct InputArgs {
    /// JSON file of B lists of S token ids.
    #[arg(long)]
    input_ids: Option<PathBuf>,
    /// Prompts to tokenise with the model's tokenizer.json: a JSON list of strings, or one per line.
    #[arg(long)]
    prompts: Option<PathBuf>,
}

impl InputArgs {
    /// The batch these arguments name, tokenising prompts with `model_path`'s tokenizer and
    /// padding them to `seq_length` (default: the longest).
    pub fn batch(&self, model_path: &std::path::Path, seq_length: Option<usize>) -> Result<TokenBatch, Box<dyn std::error::Error>> {
        if let Some(path) = &self.input_ids {
            return Ok(TokenBatch::read_json(path)?);
        }
        let path = self.prompts.as_ref().ok_or("--input-ids FILE or --prompts FILE is needed (or --request FILE)")?;
        let prompts = read_prompts(path)?;
        let tokenizer = Tokenizer::load(model_path)?;
        Ok(TokenBatch::from_prompts(&prompts, &tokenizer, seq_length, path)?)
    }
}

/// Refuses an `--out` that would destroy something, before any work: an existing file (unless
/// `--force`), a folder, anything inside the model folder.
fn check_out(out: &Path, model_path: &Path, force: bool) -> Result<(), String> {
    let resolve = |p: &Path| -> Option<PathBuf> {
        // The deepest existing ancestor, resolved (symlinks followed), plus what is below it.
        let abs = std::path::absolute(p).ok()?;
        let base = abs.ancestors().find(|a| a.exists())?;
        let rest = abs.strip_prefix(base).ok()?;
        Some(std::fs::canonicalize(base).ok()?.join(rest))
    };
    if let (Some(o), Some(m)) = (resolve(out), resolve(model_path)) {
        if o.starts_with(&m) {
            return Err(format!("--out {} is inside the model folder {}; layercheck never writes there (it could replace the model's own files)\n(hint: write the capture elsewhere, e.g. --out run.safetensors)", out.display(), model_path.display()));
        }
    }
    if out.is_dir() {
        return Err(format!("--out {} is a folder\n(hint: give a file name, e.g. --out {}/run.safetensors)", out.display(), out.display()));
    }
    if out.exists() && !force {
        return Err(format!("--out {} already exists; capture does not replace files unless asked\n(hint: choose another --out, or pass --force to replace it)", out.display()));
    }
    Ok(())
}

pub fn run(args: CaptureArgs) -> super::CliResult {
    if let Some(request) = &args.request {
        return answer_request(request, args.target, args.fault.as_deref(), &args.out);
    }
    let model_path = args.model_path.clone().ok_or("--model-path is needed (or --request)")?;
    check_out(&args.out, &model_path, args.force)?;
    let batch = args.input.batch(&model_path, args.seq_length)?;
    let model = DecoderModel::load(&model_path, args.target)?;
    let spec = RunSpec { mode: args.mode, max_new_tokens: args.max_new_tokens, mask: args.attention_mask };
    let recorder = if args.capture_inputs { Recorder::all().with_inputs() } else { Recorder::all() };
    let capture = run::capture(&model, &model_path, &batch, &spec, recorder)?;
    let replace = if args.force { Replace::Allowed } else { Replace::Never };
    capture.write_with(&args.out, replace)?;
    eprintln!(
        "captured {} module outputs of {} on {} ({}, batch {} x {} tokens) to {}",
        capture.keys.len(),
        model_path.display(),
        args.target,
        args.mode,
        batch.batch_size(),
        batch.seq_len(),
        args.out.display()
    );
    Ok(())
}

/// `capture --request`: the builtin runner answering a request file, as an external program would.
fn answer_request(path: &std::path::Path, target: Target, fault: Option<&str>, out: &std::path::Path) -> super::CliResult {
    let (request, kinds) = Request::read(path)?;
    let fault = fault.map(parse_fault).transpose()?;
    let capture = builtin::answer(&request, kinds, target, fault)?;
    capture.write(out)?;
    eprintln!("answered {} with {} records of {} on {target} to {}", path.display(), capture.keys.len(), request.model_path.display(), out.display());
    Ok(())
}

/// `KEY:AMPLITUDE`.
fn parse_fault(text: &str) -> Result<Fault, String> {
    let bad = |problem: String| format!("--fault {text}: {problem}\n(hint: --fault model.base_model.layers1.attn.dense:0.05)");
    let (key, amplitude) = text.rsplit_once(':').ok_or_else(|| bad("expected KEY:AMPLITUDE".into()))?;
    let module = key.parse().map_err(|e| bad(format!("{e}")))?;
    let amplitude: f64 = amplitude.parse().ok().filter(|a: &f64| a.is_finite()).ok_or_else(|| bad(format!("\"{amplitude}\" is not a finite number")))?;
    Ok(Fault { module, amplitude })
}
