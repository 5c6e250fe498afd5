//! The side of layercheck's per-layer test suite that needs no libtorch: test names, the test
//! matrix, module keys and targets by name, verdicts, case outcomes, failure messages and the
//! libtest-mimic runner. The `layers` test processes link only this crate, so each starts in
//! milliseconds (a process linking libtorch spends about 0.4 s in its static initialisers, which
//! nextest, running a process per test, would pay hundreds of times); they ask the `layercheck`
//! binary to compute each case once (`compute`) and share its outcome (`case_cache`).

pub mod atomic;
pub mod attribution;
pub mod case_cache;
pub mod compute;
pub mod file_lock;
pub mod location;
pub mod logits;
pub mod matrix;
pub mod message;
pub mod mode;
pub mod model_folder;
pub mod module_key;
pub mod number;
pub mod outcome;
pub mod report_dir;
pub mod runner;
pub mod shard;
pub mod target;
pub mod test_name;
pub mod update;
pub mod verdict;

pub use compute::Engine;
