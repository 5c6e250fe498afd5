//! Judges a target run as it is produced: each record is compared with its reference record
//! (read from the reference only then) and checked against the bounds, and only the comparison's
//! numbers are kept. The target's `model` records (generate mode's logits, one per step) are kept
//! for the logits test; every other output is dropped once judged.

use std::ops::ControlFlow;
use std::path::Path;

use tch::{Kind, Tensor};

use layercheck_suite::location::ErrorLocation;
use layercheck_suite::matrix::Margins;
use layercheck_suite::outcome::LayerOutcome;
use super::target_listener::TargetListener;
use layercheck_suite::verdict::{check, Bounds};
use crate::capture::RecordSource;
use crate::hooks::{Listener, ModuleKey};
use crate::metrics::{MetricsError, Rows};
use crate::runner::check::record_problem;

/// The per-layer outcomes of one target run, built record by record.
pub struct Judge<'a> {
    reference: &'a dyn RecordSource,
    bounds: &'a dyn Fn(&str) -> Bounds,
    margins: &'a Margins,
    /// Where the reference is, and how to remake it, for messages.
    reference_path: &'a Path,
    fix: &'a str,
    layers: Vec<LayerOutcome>,
    /// Records compared so far, per entry of `layers`.
    calls: Vec<usize>,
    model_records: Vec<Tensor>,
}

impl<'a> Judge<'a> {
    pub fn new(reference: &'a dyn RecordSource, bounds: &'a dyn Fn(&str) -> Bounds, margins: &'a Margins, reference_path: &'a Path, fix: &'a str) -> Self {
        Judge { reference, bounds, margins, reference_path, fix, layers: Vec::new(), calls: Vec::new(), model_records: Vec::new() }
    }

    /// Compares the target's record `name` (module `key`) with the reference's and judges it.
    pub fn push(&mut self, name: &str, key: ModuleKey, output: Result<Tensor, String>) {
        // The logits test needs only each call's last position (the step's token): a copy of it,
        // so that the prefill's logits of every position are not kept alive.
        if key == ModuleKey::Model {
            if let Ok(last) = output.as_ref().map_err(|_| ()).and_then(|t| t.f_narrow(1, t.size().get(1).copied().unwrap_or(1) - 1, 1).and_then(|l| l.f_detach_copy()).map_err(|_| ())) {
                self.model_records.push(last);
            }
        }
        let key_name = key.to_string();
        let i = match self.layers.iter().position(|l| l.key == key_name) {
            Some(i) => i,
            None => {
                self.layers.push(LayerOutcome { bounds: (self.bounds)(&key_name), key: key_name, observations: Vec::new(), failures: Vec::new(), error: None, attribution: None, location: None });
                self.calls.push(0);
                self.layers.len() - 1
            }
        };
        let layer = &mut self.layers[i];
        let Some((kind, shape)) = self.reference.info(name) else {
            layer.error = Some(format!("the golden file {} has no record {name}\n(hint: `{}`)", self.reference_path.display(), self.fix));
            return;
        };
        let output = match output {
            Ok(o) => o,
            Err(e) => {
                layer.error = Some(format!("record {name}: {e}"));
                return;
            }
        };
        if let Some(problem) = record_problem(&shape, &output) {
            layer.error = Some(format!("record {name}: {problem}"));
            return;
        }
        // The reference is read one slice of rows at a time, as the comparison needs it: a
        // comparison costs the memory of a slice, not of the tensor.
        let reference = RecordRows { source: self.reference, name, kind, shape };
        let (items, sums) = match crate::metrics::compare_in_slices(&reference, &output) {
            Ok(c) => c,
            Err(e) => {
                layer.error = Some(format!("record {name}: {e}"));
                return;
            }
        };
        drop(output);
        // Where the error sits is an aid to reading a verdict, not part of it.
        // Decode steps (generate mode) continue the sequence: step k's row is at the prompt's
        // length plus k - 1, after the rows seen so far.
        let location = layer.location.get_or_insert_with(ErrorLocation::empty);
        let first = if self.calls[i] == 0 { 0 } else { location.token_sq.len() };
        location.add_at(name, first, &sums.per_token, &sums.per_channel);
        self.calls[i] += 1;
        for (item, s) in items.iter().enumerate() {
            let obs = s.observation(name, item);
            let index = layer.observations.len();
            for f in check(&obs, &layer.bounds, self.margins) {
                layer.failures.push((index, f));
            }
            layer.observations.push(obs);
        }
    }

    /// The layers judged, in the order first seen, and the last position of each of the target's
    /// `model` records (`[B, 1, V]`).
    pub fn finish(self) -> (Vec<LayerOutcome>, Vec<Tensor>) {
        (self.layers, self.model_records)
    }
}

/// A record of the reference, read in slices by [`crate::metrics::compare_in_slices`].
struct RecordRows<'a> {
    source: &'a dyn RecordSource,
    name: &'a str,
    kind: Kind,
    shape: Vec<i64>,
}

impl Rows for RecordRows<'_> {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn shape(&self) -> Vec<i64> {
        self.shape.clone()
    }

    fn elements(&self, first: i64, count: i64) -> Result<Tensor, MetricsError> {
        self.source.elements(self.name, first, count).map_err(MetricsError::Read)
    }
}

/// A [`TargetListener`] whose records are judged as they are produced, then dropped.
pub struct JudgingListener<'a> {
    pub target: TargetListener<'a>,
    pub judge: Judge<'a>,
}

impl Listener for JudgingListener<'_> {
    fn begin_step(&mut self, step: usize) {
        self.target.begin_step(step);
    }

    fn wants_input(&self, key: ModuleKey) -> bool {
        self.target.wants_input(key)
    }

    fn replace_input(&mut self, key: ModuleKey, computed: &Tensor) -> Option<Tensor> {
        self.target.replace_input(key, computed)
    }

    fn on_output(&mut self, key: ModuleKey, input: Option<&Tensor>, output: &mut Tensor) -> ControlFlow<()> {
        let flow = self.target.on_output(key, input, output);
        for record in self.target.recorder.records.drain(..) {
            self.judge.push(&record.name, record.key, Ok(record.output));
        }
        flow
    }
}
