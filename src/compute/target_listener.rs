//! The listener of a target run in the suite: records outputs, and, as the case asks, feeds each
//! module the golden input of that module (isolated feed) and injects a deterministic fault.

use std::collections::HashMap;
use std::ops::ControlFlow;

use tch::{Kind, TchError, Tensor};

use crate::capture::{RecordError, RecordSource, Recorder};
use crate::hooks::{Listener, ModuleKey};
use crate::model::DEVICE_FAILURE_HINT;

/// A deterministic perturbation of one module's output: `amplitude * rms(output) * sin(i)` over
/// the flattened elements, so that both its size and its direction change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub module: ModuleKey,
    pub amplitude: f64,
}

impl Fault {
    /// `output` with the fault added; fails when libtorch cannot (out of memory on the device).
    pub fn apply(&self, output: &Tensor) -> Result<Tensor, TchError> {
        let x = output.f_to_kind(Kind::Float)?;
        let rms = x.f_square()?.f_mean(Kind::Float)?.f_sqrt()?;
        let pattern = Tensor::f_arange(x.numel() as i64, (Kind::Float, x.device()))?.f_sin()?.f_view(x.size().as_slice())?;
        x.f_add(&pattern.f_mul(&rms)?.f_mul_scalar(self.amplitude)?)?.f_to_kind(output.kind())
    }
}

/// The golden inputs of the isolated feed: each module's, read from the reference when the
/// module is about to run (a golden file is read one tensor at a time, never whole).
pub struct GoldenInputs<'a> {
    source: &'a dyn RecordSource,
    /// Input tensor names by (key, forward call).
    names: HashMap<(ModuleKey, usize), String>,
}

impl<'a> GoldenInputs<'a> {
    /// The inputs `source` holds, or `None` when it holds none.
    pub fn of(source: &'a dyn RecordSource) -> Option<Self> {
        let names = source.input_names_by_step();
        (!names.is_empty()).then_some(GoldenInputs { source, names })
    }
}

/// Why the listener could not do what the case asks of a module: feed it its golden input
/// (isolated feed), or add the fault to its output.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("the isolated feed could not be fed: golden input {name} has shape {found:?}, this model's input to {key} is {expected:?} (is the golden file of another model?)")]
    Shape { name: String, found: Vec<i64>, key: ModuleKey, expected: Vec<i64> },
    #[error("the isolated feed could not be fed: golden input {name}: {source}")]
    Unreadable { name: String, #[source] source: RecordError },
    #[error("the fault on {key} could not be applied: {source}\n{DEVICE_FAILURE_HINT}")]
    Fault { key: ModuleKey, #[source] source: TchError },
}

/// Records a target run, with optional golden inputs and an optional fault.
pub struct TargetListener<'a> {
    pub recorder: Recorder,
    golden_inputs: Option<GoldenInputs<'a>>,
    fault: Option<Fault>,
    /// The first golden input that could not be fed, or the fault that could not be added: the
    /// run is then not the one the case asks for, and [`TargetListener::take_input_error`] says
    /// why.
    input_error: Option<ListenerError>,
}

impl<'a> TargetListener<'a> {
    pub fn new(recorder: Recorder, golden_inputs: Option<GoldenInputs<'a>>, fault: Option<Fault>) -> Self {
        TargetListener { recorder, golden_inputs, fault, input_error: None }
    }

    /// Why a golden input could not be fed or the fault applied, if one could not.
    pub fn take_input_error(&mut self) -> Option<ListenerError> {
        self.input_error.take()
    }
}

impl Listener for TargetListener<'_> {
    fn begin_step(&mut self, step: usize) {
        self.recorder.begin_step(step);
    }

    fn wants_input(&self, key: ModuleKey) -> bool {
        self.recorder.wants_input(key)
    }

    fn replace_input(&mut self, key: ModuleKey, computed: &Tensor) -> Option<Tensor> {
        // The embedding's input is the token ids: the same on both sides.
        if key == ModuleKey::Embedding {
            return None;
        }
        let golden = self.golden_inputs.as_ref()?;
        let name = golden.names.get(&(key, self.recorder.step()))?;
        match golden.source.tensor(name) {
            // A golden input of another shape (a golden file of another model) would make the
            // module's libtorch op fail: the feed stops here and says why instead.
            Ok(Some(t)) if t.size() != computed.size() => {
                self.input_error.get_or_insert(ListenerError::Shape { name: name.clone(), found: t.size(), key, expected: computed.size() });
                None
            }
            Ok(t) => t,
            Err(e) => {
                self.input_error.get_or_insert(ListenerError::Unreadable { name: name.clone(), source: e });
                None
            }
        }
    }

    fn on_output(&mut self, key: ModuleKey, input: Option<&Tensor>, output: &mut Tensor) -> ControlFlow<()> {
        if let Some(fault) = self.fault.filter(|f| f.module == key) {
            match fault.apply(output) {
                Ok(faulty) => *output = faulty,
                Err(source) => {
                    self.input_error.get_or_insert(ListenerError::Fault { key, source });
                    return ControlFlow::Break(());
                }
            }
        }
        let flow = self.recorder.on_output(key, input, output);
        if self.input_error.is_some() {
            return ControlFlow::Break(());
        }
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::LayerModule;

    #[test]
    fn a_fault_changes_size_and_direction_deterministically() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).view([1, 2, 3]);
        let fault = Fault { module: ModuleKey::Layer(0, LayerModule::Dense), amplitude: 0.5 };
        let y = fault.apply(&x).unwrap();
        assert!(y.equal(&fault.apply(&x).unwrap()), "deterministic");
        let values: Vec<f32> = Vec::<f32>::try_from(y.flatten(0, -1)).unwrap();
        // Independent: rms of 1..6 is sqrt(91/6); element i gets 0.5 * rms * sin(i).
        let rms = (91.0f64 / 6.0).sqrt();
        for (i, v) in values.iter().enumerate() {
            let expected = (i + 1) as f64 + 0.5 * rms * (i as f64).sin();
            assert!((*v as f64 - expected).abs() < 1e-5, "{i}: {v} vs {expected}");
        }
    }
}
