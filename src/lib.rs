//! layercheck: finds where inside a neural network an accelerator's numbers drift from the CPU's.
//!
//! Data flows one way: model -> hook points -> captured tensors -> metrics -> verdict against
//! golden + thresholds -> test outcome / report. Lower layers know nothing of the harness; the CLI
//! (`src/main.rs`, `src/cli/`) and the test harness are thin shells over this library.

pub mod libtorch_env;
pub mod hooks;
pub mod model;
pub mod target;
pub mod inputs;
pub mod tensor_file;
pub mod capture;
pub mod capture_reader;
pub mod tensor_reader;
pub mod remembered_sha256;
pub mod run;
pub mod compute;
pub mod formats;
pub mod metrics;
pub mod thresholds;
pub mod py_random;
pub mod sharegpt;
pub mod metrics_run;
pub mod progress;
pub mod report;
pub mod runner;
