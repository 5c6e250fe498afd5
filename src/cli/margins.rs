//! The `--rtol` / `--atol` flags of the subcommands that judge layers against a thresholds file
//! (`report --compact`, `compare`), and their validation.

use layercheck_suite::matrix::Margins;

/// How far past a threshold a layer may go (deepview's defaults); only with `--thresholds`.
#[derive(Debug, clap::Args)]
pub struct MarginArgs {
    /// Relative margin past a threshold (with --thresholds).
    #[arg(long, requires = "thresholds", default_value_t = Margins::default().rtol)]
    rtol: f64,
    /// Absolute margin past a threshold (with --thresholds).
    #[arg(long, requires = "thresholds", default_value_t = Margins::default().atol)]
    atol: f64,
}

impl MarginArgs {
    /// The margins, or which flag is not a finite number at least 0.
    pub fn margins(&self) -> Result<Margins, String> {
        for (flag, v) in [("--rtol", self.rtol), ("--atol", self.atol)] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{flag} {v}: a margin is a finite number at least 0\n(hint: deepview's margins are --rtol 0.05 --atol 1e-6)"));
            }
        }
        Ok(Margins { rtol: self.rtol, atol: self.atol })
    }
}
