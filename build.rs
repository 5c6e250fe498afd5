//! Gives every binary of this package (the CLI, tests, benches) an rpath to libtorch's lib folder,
//! which torch-sys does not do, so that `cargo test` and `cargo nextest run` need no LD_LIBRARY_PATH;
//! records the libtorch version from its headers for `layercheck env`, and whether it has CUDA.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // torch-sys (links = "tch") exports the folder it linked against.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_default();
    if !lib.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    let version = Path::new(&lib)
        .parent()
        .and_then(|root| {
            ["include/torch/headeronly/version.h", "include/torch/version.h"]
                .iter()
                .find_map(|h| std::fs::read_to_string(root.join(h)).ok())
        })
        .and_then(|header| {
            let part = |name: &str| {
                header.lines().find_map(|l| l.strip_prefix(&format!("#define TORCH_VERSION_{name} ")).map(|v| v.trim().to_string()))
            };
            Some(format!("{}.{}.{}", part("MAJOR")?, part("MINOR")?, part("PATCH")?))
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=LAYERCHECK_LIBTORCH_VERSION={version}");
    // Whether this libtorch can see CUDA at all: without libtorch_cuda it cannot, and the suite's
    // test processes need not start a libtorch process to ask (tests/layers.rs).
    let cuda = Path::new(&lib).join("libtorch_cuda.so").exists();
    println!("cargo:rustc-env=LAYERCHECK_LIBTORCH_HAS_CUDA={}", if cuda { "1" } else { "0" });
}
