//! The per-layer test suite (libtest-mimic): see README "The per-layer test suite". This binary
//! links no libtorch (only `layercheck-suite`), so nextest's process per test starts in
//! milliseconds; the `layercheck` binary computes each case once.
fn main() -> std::process::ExitCode {
    let engine = layercheck_suite::Engine::new(env!("CARGO_BIN_EXE_layercheck"), env!("LAYERCHECK_LIBTORCH_HAS_CUDA") == "1");
    layercheck_suite::runner::main(engine)
}
