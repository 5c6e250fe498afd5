//! The computing side of the per-layer test suite: one case's reference and target runs, compared
//! record by record and judged.
//!
//! The test processes run `layercheck-suite` (crates/suite), which links no libtorch; they ask
//! `layercheck suite-case` (crates/suite/src/compute.rs is the asking side) for a case's outcome,
//! which [`evaluate::evaluate`] computes: golden files (`golden.rs`), the target's listener
//! (`target_listener.rs`), judging as records are produced (`judge.rs`), attribution, and why a case could not be
//! computed (`setup_error.rs`).

pub mod attribution;
pub mod evaluate;
pub mod golden;
pub mod judge;
pub mod setup_error;
pub mod target_listener;

