//! Progress of a long library job (cases of `generate`, files of `thresholds`): the library
//! reports, the CLI draws (or not).

/// Receives a job's progress, one step per unit of work.
pub trait Progress {
    /// Called once with the number of steps.
    fn start(&self, _steps: u64) {}
    /// Called after each step, with what it was.
    fn step(&self, _name: &str) {}
    /// Called when every step is done.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
