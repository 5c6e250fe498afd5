//! Progress bars for long commands: indicatif on stderr, drawn only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use layercheck::progress::Progress;

/// A bar counting `unit`s.
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new(unit: &str) -> Self {
        let target = if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) = ProgressStyle::with_template(&format!("{{spinner}} [{{elapsed_precise}}] {{bar:40}} {{pos}}/{{len}} {unit} {{wide_msg}}")) {
            bar.set_style(style);
        }
        Bar(bar)
    }

}

impl Progress for Bar {
    fn start(&self, steps: u64) {
        self.0.reset();
        self.0.set_length(steps);
    }

    fn step(&self, name: &str) {
        self.0.set_message(name.to_string());
        self.0.inc(1);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
