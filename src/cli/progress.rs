//! Progress bars for long commands: indicatif on stderr, drawn only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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

    pub fn start_len(&self, len: u64) {
        self.0.reset();
        self.0.set_length(len);
    }

    pub fn step(&self, message: &str) {
        self.0.set_message(message.to_string());
        self.0.inc(1);
    }

    pub fn done(&self) {
        self.0.finish_and_clear();
    }
}
