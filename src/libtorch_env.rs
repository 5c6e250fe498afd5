//! What libtorch this process runs on: version, where it was loaded from, threads, CUDA.

use serde::Serialize;

/// The libtorch version this crate was built against (read from its `torch/version.h` by build.rs).
pub const LIBTORCH_VERSION: &str = env!("LAYERCHECK_LIBTORCH_VERSION");

/// A description of the libtorch runtime, as `layercheck env` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct LibtorchEnv {
    pub version: String,
    /// The `libtorch_cpu.so` this process has mapped, when it can be found.
    pub library: Option<String>,
    pub threads: i32,
    pub cuda_available: bool,
    pub cuda_devices: i64,
}

impl LibtorchEnv {
    /// Reads the runtime facts from the running process.
    pub fn detect() -> Self {
        LibtorchEnv {
            version: LIBTORCH_VERSION.to_string(),
            library: loaded_library("libtorch_cpu.so"),
            threads: tch::get_num_threads(),
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
        }
    }
}

impl std::fmt::Display for LibtorchEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "libtorch version: {}", self.version)?;
        let lib = self.library.as_deref().unwrap_or("(not found in /proc/self/maps)");
        writeln!(f, "libtorch library: {lib}")?;
        writeln!(f, "threads: {}", self.threads)?;
        if self.cuda_available {
            write!(f, "cuda: available, {} device(s)", self.cuda_devices)
        } else {
            write!(f, "cuda: not available (a CPU-only libtorch or no GPU)")
        }
    }
}

/// Finds the path of a shared library mapped into this process (Linux).
fn loaded_library(name: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.rsplit('/').next() == Some(name))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_libtorch_we_link() {
        let env = LibtorchEnv::detect();
        assert_eq!(env.version, "2.13.0");
        let lib = env.library.expect("libtorch_cpu.so is mapped in a test binary");
        assert!(lib.ends_with("/libtorch_cpu.so"), "{lib}");
        assert!(env.threads >= 1);
    }
}
