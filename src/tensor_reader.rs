//! A safetensors file read one tensor at a time: the header is parsed and checked when the file is
//! opened (through a read-only map of the file, of which only the header's pages are touched),
//! and each tensor's bytes are read when asked for, by a positioned read into memory the tensor
//! owns. A golden file of several gigabytes costs, at any moment, only the tensors in use.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use tch::{Kind, Tensor};

use crate::tensor_file::{kind_of, TensorFileError};

/// The most bytes of a tensor [`TensorReader::read_as`] holds in its file's dtype at once.
pub const SLICE_BYTES: u64 = 16 << 20;

/// Where one tensor lies in the file.
#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    shape: Vec<i64>,
    /// Byte range in the file (absolute).
    start: u64,
    end: u64,
}

/// An open safetensors file whose tensors are read on demand.
pub struct TensorReader {
    path: PathBuf,
    file: File,
    pub metadata: HashMap<String, String>,
    entries: HashMap<String, Entry>,
}

impl TensorReader {
    /// Opens `path` and checks its header (dtypes, shapes, offsets against the file's length).
    pub fn open(path: &Path) -> Result<Self, TensorFileError> {
        let io = |source| TensorFileError::Io { path: path.to_path_buf(), source };
        let corrupt = |problem: String| TensorFileError::Corrupt { path: path.to_path_buf(), problem };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and lives only in this function; a file changed by another
        // process meanwhile is read as whatever it holds, which the checks below or the data
        // checksum of a golden file then report.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        crate::formats::safetensors_offsets::check_data_offsets(&map).map_err(corrupt)?;
        let (header_len, header) = SafeTensors::read_metadata(&map).map_err(|e| corrupt(e.to_string()))?;
        let data_start = 8 + header_len as u64;
        let mut entries = HashMap::new();
        for (name, info) in header.tensors() {
            let kind = kind_of(info.dtype).ok_or_else(|| TensorFileError::Dtype { path: path.to_path_buf(), name: name.clone(), dtype: format!("{:?}", info.dtype) })?;
            let shape: Vec<i64> = info
                .shape
                .iter()
                .map(|&d| i64::try_from(d))
                .collect::<Result<_, _>>()
                .map_err(|_| corrupt(format!("tensor {name} has shape {:?}, a dimension beyond {}", info.shape, i64::MAX)))?;
            let (begin, end) = info.data_offsets;
            entries.insert(name, Entry { kind, shape, start: data_start + begin as u64, end: data_start + end as u64 });
        }
        let metadata = header.metadata().clone().unwrap_or_default();
        Ok(TensorReader { path: path.to_path_buf(), file, metadata, entries })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file has a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The dtype and shape of the tensor called `name`, if present.
    pub fn info(&self, name: &str) -> Option<(Kind, &[i64])> {
        self.entries.get(name).map(|e| (e.kind, e.shape.as_slice()))
    }

    /// The names of the file's tensors, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Reads the tensor called `name` onto the CPU (`None` when the file has none).
    pub fn read(&self, name: &str) -> Result<Option<Tensor>, TensorFileError> {
        let Some(entry) = self.entries.get(name) else { return Ok(None) };
        let torch = |e: tch::TchError| TensorFileError::Corrupt { path: self.path.clone(), problem: format!("tensor {name}: {e}") };
        let out = Tensor::f_empty(entry.shape.as_slice(), (entry.kind, tch::Device::Cpu)).map_err(torch)?;
        self.read_into(&out, entry.start, entry.end)?;
        Ok(Some(out))
    }

    /// Reads the file's bytes `start..end` straight into the storage of `out`, a contiguous CPU
    /// tensor of exactly that many bytes just made by this reader (no intermediate buffer).
    fn read_into(&self, out: &Tensor, start: u64, end: u64) -> Result<(), TensorFileError> {
        let len = (end - start) as usize;
        debug_assert_eq!(out.numel() * out.kind().elt_size_in_bytes(), len);
        if len == 0 {
            return Ok(());
        }
        // SAFETY: `out` is a contiguous CPU tensor of `len` bytes that nothing else refers to
        // yet; its storage is valid for writes of `len` bytes while `out` is alive.
        let bytes = unsafe { std::slice::from_raw_parts_mut(out.data_ptr() as *mut u8, len) };
        self.file.read_exact_at(bytes, start).map_err(|source| TensorFileError::Io { path: self.path.clone(), source })
    }

    /// Elements `first..first + count` of the tensor called `name` (flattened, row-major) as a
    /// 1-d tensor of its dtype: a slice of rows is read without reading the rest.
    pub fn read_elements(&self, name: &str, first: u64, count: u64) -> Result<Option<Tensor>, TensorFileError> {
        let Some(entry) = self.entries.get(name) else { return Ok(None) };
        let element = entry.kind.elt_size_in_bytes() as u64;
        let range = first.checked_mul(element).and_then(|a| Some((a, count.checked_mul(element)?)));
        let range = range.and_then(|(a, n)| Some((entry.start.checked_add(a)?, n))).and_then(|(start, n)| Some((start, start.checked_add(n)?)));
        let Some((start, end)) = range.filter(|&(_, end)| end <= entry.end) else {
            let has = (entry.end - entry.start) / element.max(1);
            return Err(TensorFileError::Corrupt { path: self.path.clone(), problem: format!("tensor {name}: elements {first}..{} asked for, it has {has}", first.saturating_add(count)) });
        };
        let slice = Entry { kind: entry.kind, shape: vec![count as i64], start, end };
        let bytes = self.bytes(&slice)?;
        Tensor::f_from_data_size(&bytes, &slice.shape, entry.kind)
            .map(Some)
            .map_err(|e| TensorFileError::Corrupt { path: self.path.clone(), problem: format!("tensor {name}: {e}") })
    }

    /// Reads the tensor called `name` onto the CPU as `kind`, converting a slice of at most
    /// [`SLICE_BYTES`] at a time: a float32 weight read as float16 never exists whole in float32
    /// (`None` when the file has no such tensor).
    pub fn read_as(&self, name: &str, kind: Kind) -> Result<Option<Tensor>, TensorFileError> {
        let Some(entry) = self.entries.get(name) else { return Ok(None) };
        if entry.kind == kind {
            return self.read(name);
        }
        let torch = |e: tch::TchError| TensorFileError::Corrupt { path: self.path.clone(), problem: format!("tensor {name}: {e}") };
        let out = Tensor::f_empty(entry.shape.as_slice(), (kind, tch::Device::Cpu)).map_err(torch)?;
        let flat = out.f_view([-1]).map_err(torch)?;
        let element = entry.kind.elt_size_in_bytes() as u64;
        let numel = (entry.end - entry.start) / element.max(1);
        let per_slice = (SLICE_BYTES / element).max(1).min(numel.max(1));
        // One buffer for every slice, so that reading a weight allocates its result and one slice.
        let part = Tensor::f_empty([per_slice as i64], (entry.kind, tch::Device::Cpu)).map_err(torch)?;
        let mut done = 0u64;
        while done < numel {
            let n = per_slice.min(numel - done);
            let start = entry.start + done * element;
            let part = part.f_narrow(0, 0, n as i64).map_err(torch)?;
            self.read_into(&part, start, start + n * element)?;
            flat.f_narrow(0, done as i64, n as i64).map_err(torch)?.f_copy_(&part).map_err(torch)?;
            done += n;
        }
        Ok(Some(out))
    }

    fn bytes(&self, entry: &Entry) -> Result<Vec<u8>, TensorFileError> {
        let mut bytes = vec![0u8; (entry.end - entry.start) as usize];
        self.file.read_exact_at(&mut bytes, entry.start).map_err(|source| TensorFileError::Io { path: self.path.clone(), source })?;
        Ok(bytes)
    }

    /// [`crate::tensor_file::tensors_sha256`] of the file's tensors, computed from their bytes one
    /// tensor at a time, without making tensors of them.
    pub fn tensors_sha256(&self) -> Result<String, TensorFileError> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let field = |h: &mut Sha256, bytes: &[u8]| {
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        for name in self.names() {
            let entry = &self.entries[name];
            field(&mut h, name.as_bytes());
            field(&mut h, format!("{:?}", entry.kind).as_bytes());
            field(&mut h, format!("{:?}", entry.shape).as_bytes());
            field(&mut h, &self.bytes(entry)?);
        }
        Ok(format!("{:x}", h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_file::{tensors_sha256, write_atomic, TensorFile};
    use tch::Device;

    fn sample(dir: &Path) -> (PathBuf, Vec<(String, Tensor)>) {
        let path = dir.join("x.safetensors");
        let tensors = vec![
            ("a".to_string(), Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 9.5]).view([1, 2, 3])),
            ("b".to_string(), Tensor::from_slice(&[7i64, 8, 9])),
            ("c".to_string(), Tensor::from_slice(&[0.5f32, 0.25]).to_kind(Kind::Half)),
            ("empty".to_string(), Tensor::zeros([0, 4], (Kind::BFloat16, Device::Cpu))),
        ];
        write_atomic(&path, &tensors, HashMap::from([("what".to_string(), "test".to_string())])).unwrap();
        (path, tensors)
    }

    #[test]
    fn reads_each_tensor_as_the_whole_file_reader_does() {
        let dir = tempfile::tempdir().unwrap();
        let (path, tensors) = sample(dir.path());
        let reader = TensorReader::open(&path).unwrap();
        let whole = TensorFile::read(&path).unwrap();
        assert_eq!(reader.metadata, whole.metadata);
        assert_eq!(reader.names(), vec!["a", "b", "c", "empty"]);
        for (name, t) in &tensors {
            let lazy = reader.read(name).unwrap().unwrap();
            assert_eq!((lazy.kind(), lazy.size()), (t.kind(), t.size()), "{name}");
            assert!(lazy.equal(t), "{name}");
            assert!(lazy.equal(whole.get(name).unwrap()), "{name}");
        }
        assert!(reader.read("missing").unwrap().is_none());
        assert!(!reader.contains("missing") && reader.contains("a"));
    }

    #[test]
    fn read_as_converts_slice_by_slice_to_what_a_whole_conversion_gives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        // More elements than one slice holds, so that several slices are converted.
        let n = 5 * (SLICE_BYTES / 4 * 2 / 5 + 1234) as i64;
        let w = Tensor::randn([n], (Kind::Float, Device::Cpu)).view([n / 5, 5]);
        write_atomic(&path, &[("w".into(), w.shallow_clone())], HashMap::new()).unwrap();
        let reader = TensorReader::open(&path).unwrap();
        for kind in [Kind::Half, Kind::BFloat16, Kind::Float] {
            let got = reader.read_as("w", kind).unwrap().unwrap();
            assert_eq!((got.kind(), got.size()), (kind, w.size()));
            assert!(got.equal(&w.to_kind(kind)), "{kind:?}");
        }
        assert!(reader.read_as("none", Kind::Half).unwrap().is_none());
        let part = reader.read_elements("w", 7, 11).unwrap().unwrap();
        assert!(part.equal(&w.view([-1]).narrow(0, 7, 11)));
        assert!(reader.read_elements("w", n as u64 - 3, 4).is_err(), "past the end");
    }

    #[test]
    fn the_streamed_checksum_is_the_tensors_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let (path, tensors) = sample(dir.path());
        let expected = tensors_sha256(tensors.iter().map(|(n, t)| (n.as_str(), t))).unwrap();
        assert_eq!(TensorReader::open(&path).unwrap().tensors_sha256().unwrap(), expected);
    }

    #[test]
    fn a_truncated_file_is_corrupt_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = sample(dir.path());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = TensorReader::open(&path).err().unwrap().to_string();
        assert!(err.contains("is not a valid safetensors file") && err.contains("x.safetensors"), "{err}");
        let missing = TensorReader::open(&dir.path().join("none.safetensors")).err().unwrap().to_string();
        assert!(missing.contains("none.safetensors"), "{missing}");
    }
}
