//! Hook points: the fms module keys of a decoder, in fms's post-hook order, and the listener
//! interface through which a forward pass reports (and may alter) each module's output.
//!
//! A forward pass without a listener does no extra work. A listener sees each module's output and,
//! when it asks, the module's input; it may replace a module's input (to feed a layer the CPU's
//! input), change an output (to inject a fault), or stop the forward after the last module it needs.

use std::ops::ControlFlow;

use tch::Tensor;

pub use layercheck_suite::module_key::{BadModuleKey, LayerModule, ModuleKey};

/// Receives what a forward pass computes at each hook point.
pub trait Listener {
    /// Called before each forward call of a generate run (step 0 is the prompt).
    fn begin_step(&mut self, _step: usize) {}

    /// Whether `on_output` should also get the module's input.
    fn wants_input(&self, _key: ModuleKey) -> bool {
        false
    }

    /// A tensor to use as the module's input instead of `computed`, the one the model computed.
    fn replace_input(&mut self, _key: ModuleKey, _computed: &Tensor) -> Option<Tensor> {
        None
    }

    /// Sees a module's output (which it may replace); `Break` stops the forward pass here.
    fn on_output(&mut self, key: ModuleKey, input: Option<&Tensor>, output: &mut Tensor) -> ControlFlow<()>;
}

/// Why a forward pass did not run to its end.
#[derive(Debug)]
pub enum Interrupted {
    /// The listener stopped it (not an error: it needed no later module).
    Stopped,
    /// A libtorch op failed (out of memory, a device error) at or after hook point `key`.
    Torch { key: ModuleKey, source: tch::TchError },
}

/// Wraps a libtorch error with the hook point it happened at.
pub fn at(key: ModuleKey) -> impl Fn(tch::TchError) -> Interrupted {
    move |source| Interrupted::Torch { key, source }
}

/// The model side of hooks: wraps an optional listener.
pub struct Hooks<'a> {
    listener: Option<&'a mut dyn Listener>,
}

impl<'a> Hooks<'a> {
    /// Hooks that call `listener`.
    pub fn new(listener: &'a mut dyn Listener) -> Self {
        Hooks { listener: Some(listener) }
    }

    /// No listener: hook points cost nothing.
    pub fn none() -> Self {
        Hooks { listener: None }
    }

    /// Whether anyone listens.
    pub fn active(&self) -> bool {
        self.listener.is_some()
    }

    pub(crate) fn begin_step(&mut self, step: usize) {
        if let Some(l) = self.listener.as_deref_mut() {
            l.begin_step(step);
        }
    }

    /// The input a module should use: the listener's replacement or `x` itself.
    pub(crate) fn input(&mut self, key: ModuleKey, x: &Tensor) -> Result<Tensor, Interrupted> {
        match self.listener.as_deref_mut().and_then(|l| l.replace_input(key, x)) {
            Some(replacement) => replacement.f_to_device(x.device()).and_then(|t| t.f_to_kind(x.kind())).map_err(at(key)),
            None => Ok(x.shallow_clone()),
        }
    }

    /// Reports a module's output; returns it (possibly replaced by the listener).
    pub(crate) fn output(&mut self, key: ModuleKey, input: &Tensor, mut output: Tensor) -> Result<Tensor, Interrupted> {
        let Some(l) = self.listener.as_deref_mut() else { return Ok(output) };
        let input = l.wants_input(key).then_some(input);
        match l.on_output(key, input, &mut output) {
            ControlFlow::Continue(()) => Ok(output),
            ControlFlow::Break(()) => Err(Interrupted::Stopped),
        }
    }

    /// Runs a leaf module `f` at hook point `key`.
    pub(crate) fn call(&mut self, key: ModuleKey, x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor, tch::TchError>) -> Result<Tensor, Interrupted> {
        if self.listener.is_none() {
            return f(x).map_err(at(key));
        }
        let input = self.input(key, x)?;
        let out = f(&input).map_err(at(key))?;
        self.output(key, &input, out)
    }
}
