//! safetensors files of libtorch tensors with string metadata: read whole, written atomically
//! (a temporary file in the same folder, renamed into place), so a reader never sees half a file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};

use layercheck_suite::atomic::{write_file, AtomicWriteError, Replace};

/// Why a tensor file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    #[error("{path}: {source}\n(hint: check the path, and that the file is readable)")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid safetensors file ({problem}); it may be truncated or corrupt\n(hint: restore or regenerate the file; a download or copy may have been cut short)")]
    Corrupt { path: PathBuf, problem: String },
    #[error("{path}: tensor {name} has dtype {dtype}, which layercheck does not handle (f32, f16, bf16, f64, i64, i32, bool)\n(hint: convert the tensor to one of these dtypes)")]
    Dtype { path: PathBuf, name: String, dtype: String },
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

/// The tensors and metadata of one safetensors file.
pub struct TensorFile {
    pub metadata: HashMap<String, String>,
    /// Tensors in file order.
    pub tensors: Vec<(String, Tensor)>,
}

impl TensorFile {
    /// Reads every tensor of `path` onto the CPU.
    pub fn read(path: &Path) -> Result<Self, TensorFileError> {
        let bytes = std::fs::read(path).map_err(|source| TensorFileError::Io { path: path.to_path_buf(), source })?;
        let corrupt = |e: safetensors::SafeTensorError| TensorFileError::Corrupt { path: path.to_path_buf(), problem: e.to_string() };
        crate::formats::safetensors_offsets::check_data_offsets(&bytes).map_err(|problem| TensorFileError::Corrupt { path: path.to_path_buf(), problem })?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(corrupt)?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let parsed = SafeTensors::deserialize(&bytes).map_err(corrupt)?;
        let mut tensors = Vec::new();
        for (name, view) in parsed.iter() {
            let kind = kind_of(view.dtype()).ok_or_else(|| TensorFileError::Dtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            // safetensors accepts any u64 dimension beside a zero one (no elements); libtorch's are i64.
            let shape: Vec<i64> = view.shape().iter().map(|&d| i64::try_from(d)).collect::<Result<_, _>>().map_err(|_| TensorFileError::Corrupt {
                path: path.to_path_buf(),
                problem: format!("tensor {name} has shape {:?}, a dimension beyond {}", view.shape(), i64::MAX),
            })?;
            let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)
                .map_err(|e| TensorFileError::Corrupt { path: path.to_path_buf(), problem: format!("tensor {name}: {e}") })?;
            tensors.push((name.to_string(), tensor));
        }
        Ok(TensorFile { metadata, tensors })
    }

    /// Takes the tensor called `name` out of the file, if present.
    pub fn take(&mut self, name: &str) -> Option<Tensor> {
        let i = self.tensors.iter().position(|(n, _)| n == name)?;
        Some(self.tensors.swap_remove(i).1)
    }

    /// The tensor called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Writes `tensors` and `metadata` to `path` atomically, replacing it; tensors are copied to the CPU.
pub fn write_atomic(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<(), TensorFileError> {
    write_atomic_with(path, tensors, metadata, Replace::Allowed)
}

/// [`write_atomic`], replacing an existing `path` only when `replace` allows it.
pub fn write_atomic_with(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>, replace: Replace) -> Result<(), TensorFileError> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let t = tensor.to_device(Device::Cpu).contiguous();
        let dtype = dtype_of(t.kind()).ok_or_else(|| TensorFileError::Dtype {
            path: path.to_path_buf(),
            name: name.clone(),
            dtype: format!("{:?}", t.kind()),
        })?;
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel).map_err(|e| TensorFileError::Corrupt { path: path.to_path_buf(), problem: e.to_string() })?;
        views.push((name.clone(), Bytes { dtype, shape: t.size().iter().map(|&d| d as usize).collect(), data }));
    }
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| TensorFileError::Corrupt { path: path.to_path_buf(), problem: e.to_string() })?;
    Ok(write_file(path, replace, |w| w.write_all(&bytes))?)
}

/// The sha256 of named tensors' contents, independent of file layout: for each tensor in name
/// order, its name, dtype, shape and little-endian data bytes (each field length-prefixed).
pub fn tensors_sha256<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> Result<String, tch::TchError> {
    use sha2::{Digest, Sha256};
    let mut named: Vec<(&str, &Tensor)> = tensors.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    let field = |h: &mut Sha256, bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for (name, tensor) in named {
        let t = tensor.to_device(Device::Cpu).contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        field(&mut h, name.as_bytes());
        field(&mut h, format!("{:?}", t.kind()).as_bytes());
        field(&mut h, format!("{:?}", t.size()).as_bytes());
        field(&mut h, &data);
    }
    Ok(format!("{:x}", h.finalize()))
}

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

pub(crate) fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_tensors_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0]).view([2, 2]).to_kind(Kind::Half);
        let b = Tensor::from_slice(&[7i64, 8, 9]);
        let meta = HashMap::from([("what".to_string(), "test".to_string())]);
        write_atomic(&path, &[("a".into(), a.shallow_clone()), ("b".into(), b.shallow_clone())], meta).unwrap();
        let mut file = TensorFile::read(&path).unwrap();
        assert_eq!(file.metadata["what"], "test");
        let a2 = file.take("a").unwrap();
        assert_eq!(a2.kind(), Kind::Half);
        assert!(a2.equal(&a));
        assert!(file.take("b").unwrap().equal(&b));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_truncated_file_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        write_atomic(&path, &[("a".into(), Tensor::zeros([64], (Kind::Float, Device::Cpu)))], HashMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = TensorFile::read(&path).err().unwrap().to_string();
        assert!(err.contains("is not a valid safetensors file") && err.contains("x.safetensors"), "{err}");
    }
}
