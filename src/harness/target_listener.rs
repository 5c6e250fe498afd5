//! The listener of a target run in the suite: records outputs, and, as the case asks, feeds each
//! module the golden input of that module (isolated feed) and injects a deterministic fault.

use std::collections::HashMap;
use std::ops::ControlFlow;

use tch::{Kind, Tensor};

use crate::capture::Recorder;
use crate::hooks::{Listener, ModuleKey};

/// A deterministic perturbation of one module's output: `amplitude * rms(output) * sin(i)` over
/// the flattened elements, so that both its size and its direction change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    pub module: ModuleKey,
    pub amplitude: f64,
}

impl Fault {
    /// `output` with the fault added.
    pub fn apply(&self, output: &Tensor) -> Tensor {
        let x = output.to_kind(Kind::Float);
        let rms = x.square().mean(Kind::Float).sqrt();
        let pattern = Tensor::arange(x.numel() as i64, (Kind::Float, x.device())).sin().view(x.size().as_slice());
        (x + pattern * rms * self.amplitude).to_kind(output.kind())
    }
}

/// Records a target run, with optional golden inputs and an optional fault.
pub struct TargetListener {
    pub recorder: Recorder,
    /// Golden module inputs by (key, forward call), for isolated feeding.
    golden_inputs: Option<HashMap<(ModuleKey, usize), Tensor>>,
    fault: Option<Fault>,
}

impl TargetListener {
    pub fn new(recorder: Recorder, golden_inputs: Option<HashMap<(ModuleKey, usize), Tensor>>, fault: Option<Fault>) -> Self {
        TargetListener { recorder, golden_inputs, fault }
    }
}

impl Listener for TargetListener {
    fn begin_step(&mut self, step: usize) {
        self.recorder.begin_step(step);
    }

    fn wants_input(&self, key: ModuleKey) -> bool {
        self.recorder.wants_input(key)
    }

    fn replace_input(&mut self, key: ModuleKey) -> Option<Tensor> {
        // The embedding's input is the token ids: the same on both sides.
        if key == ModuleKey::Embedding {
            return None;
        }
        let golden = self.golden_inputs.as_ref()?;
        golden.get(&(key, self.recorder.step())).map(Tensor::shallow_clone)
    }

    fn on_output(&mut self, key: ModuleKey, input: Option<&Tensor>, output: &mut Tensor) -> ControlFlow<()> {
        if let Some(fault) = self.fault.filter(|f| f.module == key) {
            *output = fault.apply(output);
        }
        self.recorder.on_output(key, input, output)
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
        let y = fault.apply(&x);
        assert!(y.equal(&fault.apply(&x)), "deterministic");
        let values: Vec<f32> = Vec::<f32>::try_from(y.flatten(0, -1)).unwrap();
        // Independent: rms of 1..6 is sqrt(91/6); element i gets 0.5 * rms * sin(i).
        let rms = (91.0f64 / 6.0).sqrt();
        for (i, v) in values.iter().enumerate() {
            let expected = (i + 1) as f64 + 0.5 * rms * (i as f64).sin();
            assert!((*v as f64 - expected).abs() < 1e-5, "{i}: {v} vs {expected}");
        }
    }
}
