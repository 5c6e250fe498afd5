//! The per-layer test suite (libtest-mimic): see README "The per-layer test suite".
fn main() -> std::process::ExitCode {
    layercheck::harness::runner::main()
}
