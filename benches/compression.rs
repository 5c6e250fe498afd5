//! Is lossless compression of golden files worth it? On SmolLM2-135M's reference activations
//! (the golden files of b1 s64 and b4 s256, model-forward), in one run: the file as it is, zstd of
//! the whole file at levels 1, 3 and 9, and zstd of the tensors byte-grouped (each float32's four
//! bytes split into four planes, so that the exponent bytes sit together). Printed per variant:
//! size ratio, compression time, and read speed (decompressing, and un-grouping, from memory)
//! against reading the plain file from the page cache.
//!
//! Opt-in: needs models/smollm2-135m-instruct. `cargo bench --bench compression`.

#[path = "common/smollm2_suite.rs"]
mod smollm2_suite;

use std::path::{Path, PathBuf};
use std::time::Instant;

use smollm2_suite::{smollm2, Suite};

/// The data section of a safetensors file split into byte planes per float32 tensor (other
/// tensors as they are), after its header.
fn byte_grouped(bytes: &[u8]) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(bytes).expect("a safetensors file");
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut out = bytes[..8 + n].to_vec();
    let mut tensors = st.tensors();
    tensors.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    for (_, view) in tensors {
        let data = view.data();
        if view.dtype() == safetensors::Dtype::F32 {
            for plane in 0..4 {
                out.extend(data.iter().skip(plane).step_by(4));
            }
        } else {
            out.extend_from_slice(data);
        }
    }
    out
}

/// The inverse of [`byte_grouped`] for one plane-split buffer of `len` bytes (timed on reading).
fn ungroup(planes: &[u8]) -> Vec<u8> {
    let q = planes.len() / 4;
    let mut out = vec![0u8; planes.len()];
    for plane in 0..4 {
        for (i, b) in planes[plane * q..(plane + 1) * q].iter().enumerate() {
            out[i * 4 + plane] = *b;
        }
    }
    out
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..runs {
        let start = Instant::now();
        let v = f();
        best = best.min(start.elapsed().as_secs_f64());
        out = Some(v);
    }
    (best, out.unwrap())
}

fn report(path: &Path) {
    let plain = std::fs::read(path).expect("golden readable");
    let mb = plain.len() as f64 / 1e6;
    let (read_s, _) = best_of(3, || std::fs::read(path).expect("readable").len());
    println!("{}: {:.1} MB; plain read from the page cache {:.0} MB/s", path.display(), mb, mb / read_s);
    println!("  {:<22} {:>7} {:>12} {:>14}", "variant", "ratio", "compress s", "read MB/s");
    for level in [1, 3, 9] {
        let (c_s, packed) = best_of(1, || zstd::bulk::compress(&plain, level).expect("compresses"));
        let (d_s, unpacked) = best_of(3, || zstd::bulk::decompress(&packed, plain.len()).expect("decompresses"));
        assert_eq!(unpacked, plain, "lossless");
        println!("  {:<22} {:>7.3} {:>12.2} {:>14.0}", format!("zstd -{level}"), plain.len() as f64 / packed.len() as f64, c_s, mb / d_s);
    }
    let grouped = byte_grouped(&plain);
    let (c_s, packed) = best_of(1, || zstd::bulk::compress(&grouped, 3).expect("compresses"));
    // Reading: decompress, then un-group the planes (timed as one whole-data pass, the cost of a
    // single tensor-sized un-grouping scaled to the file).
    let (d_s, unpacked) = best_of(3, || {
        let u = zstd::bulk::decompress(&packed, grouped.len()).expect("decompresses");
        let q = (u.len() / 4) * 4;
        let _ = ungroup(&u[..q]);
        u
    });
    assert_eq!(unpacked, grouped, "lossless");
    println!("  {:<22} {:>7.3} {:>12.2} {:>14.0}", "byte-grouped + zstd -3", plain.len() as f64 / packed.len() as f64, c_s, mb / d_s);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let layercheck = PathBuf::from(env!("CARGO_BIN_EXE_layercheck"));
    let model = match smollm2(&root, "compression bench") {
        Ok(m) => m,
        Err(line) => return println!("{line}"),
    };
    let suite = Suite::new(&root, &model, &layercheck);
    for name in ["smollm2::cpu-f16::fwd::b1::s64", "smollm2::cpu-f16::fwd::b4::s256"] {
        report(&suite.make_golden(&Suite::case(name)));
    }
}
