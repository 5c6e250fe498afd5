//! A capture file read one record at a time ([`crate::tensor_reader::TensorReader`]): how golden
//! files are read, so that a case never holds its whole reference in memory.

use std::collections::HashMap;
use std::path::Path;

use tch::Tensor;

use crate::capture::{check_listed, listed_keys, CaptureError, RecordError, RecordSource};
use crate::tensor_reader::TensorReader;

/// An open capture file: its metadata and record names, its tensors read when asked for.
pub struct CaptureReader {
    reader: TensorReader,
    keys: Vec<String>,
}

impl CaptureReader {
    /// Opens a capture file, checking its header, its format entry and that every listed key is
    /// present (as [`crate::capture::Capture::read`] does, without reading any tensor).
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let reader = TensorReader::open(path)?;
        let keys = listed_keys(path, &reader.metadata)?;
        check_listed(path, &keys, |k| reader.contains(k))?;
        Ok(CaptureReader { reader, keys })
    }

    /// The checksum of the file's tensors ([`crate::tensor_file::tensors_sha256`]), read through.
    pub fn tensors_sha256(&self) -> Result<String, CaptureError> {
        Ok(self.reader.tensors_sha256()?)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.reader.path()
    }
}

impl RecordSource for CaptureReader {
    fn metadata(&self) -> &HashMap<String, String> {
        &self.reader.metadata
    }

    fn keys(&self) -> &[String] {
        &self.keys
    }

    fn contains(&self, name: &str) -> bool {
        self.reader.contains(name)
    }

    fn tensor(&self, name: &str) -> Result<Option<Tensor>, RecordError> {
        Ok(self.reader.read(name)?)
    }

    fn info(&self, name: &str) -> Option<(tch::Kind, Vec<i64>)> {
        self.reader.info(name).map(|(k, s)| (k, s.to_vec()))
    }

    fn elements(&self, name: &str, first: i64, count: i64) -> Result<Tensor, RecordError> {
        let (_, shape) = self.reader.info(name).ok_or_else(|| RecordError::Missing(name.to_string()))?;
        let has = shape.iter().product::<i64>();
        if first < 0 || count < 0 || first.saturating_add(count) > has {
            return Err(RecordError::Range { name: name.to_string(), first, count, has });
        }
        self.reader.read_elements(name, first as u64, count as u64)?.ok_or_else(|| RecordError::Missing(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Capture, Recorder};
    use crate::hooks::{Listener, ModuleKey};

    #[test]
    fn reads_the_records_and_inputs_that_the_whole_file_reader_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let mut recorder = Recorder::all().with_inputs();
        for (step, key) in [(0, ModuleKey::Embedding), (0, ModuleKey::Head), (1, ModuleKey::Embedding), (1, ModuleKey::Head)] {
            recorder.begin_step(step);
            let input = Tensor::from_slice(&[step as f32, 1.0]);
            let mut output = Tensor::from_slice(&[step as f32 * 2.0, 3.0, 4.0]);
            let _ = recorder.on_output(key, Some(&input), &mut output);
        }
        let meta = HashMap::from([("model".to_string(), "m".to_string())]);
        Capture::from_records(&recorder.records, vec![("input_ids".into(), Tensor::from_slice(&[1i64, 2]))], meta).write(&path).unwrap();
        let whole = Capture::read(&path).unwrap();
        let lazy = CaptureReader::open(&path).unwrap();
        assert_eq!(lazy.keys(), whole.keys.as_slice());
        assert_eq!(lazy.metadata(), &whole.metadata);
        assert_eq!(lazy.input_names_by_step(), whole.input_names_by_step());
        assert_eq!(lazy.input_names_by_step().len(), 4);
        for name in whole.tensors.keys() {
            assert!(lazy.tensor(name).unwrap().unwrap().equal(&whole.tensors[name]), "{name}");
            assert_eq!(lazy.info(name), whole.info(name), "{name}");
            assert!(lazy.elements(name, 1, 1).unwrap().equal(&whole.elements(name, 1, 1).unwrap()), "{name}");
        }
        assert_eq!(lazy.tensors_sha256().unwrap(), whole.tensors_sha256().unwrap());
    }

    #[test]
    fn a_file_that_is_not_a_capture_is_refused_as_the_whole_file_reader_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        crate::tensor_file::write_atomic(&path, &[("w".into(), Tensor::from_slice(&[1.0f32]))], HashMap::new()).unwrap();
        let lazy = CaptureReader::open(&path).err().unwrap().to_string();
        assert_eq!(lazy, Capture::read(&path).err().unwrap().to_string());
        assert!(lazy.contains("no \"format\" entry"), "{lazy}");
    }

    #[test]
    fn both_readers_refuse_element_ranges_outside_a_tensor_and_agree_inside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let mut recorder = Recorder::all();
        recorder.begin_step(0);
        let mut output = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]);
        let _ = recorder.on_output(ModuleKey::Head, None, &mut output);
        Capture::from_records(&recorder.records, Vec::new(), HashMap::new()).write(&path).unwrap();
        let (whole, lazy) = (Capture::read(&path).unwrap(), CaptureReader::open(&path).unwrap());
        let name = whole.keys[0].clone();
        let sources: [&dyn RecordSource; 2] = [&whole, &lazy];
        for source in sources {
            assert_eq!(Vec::<f32>::try_from(source.elements(&name, 1, 2).unwrap()).unwrap(), vec![2.0, 3.0]);
            // narrow would count -2 from the end; a wrapped u64 would overflow the offset.
            for (first, count) in [(-2, 2), (0, -1), (3, 2), (i64::MAX, 1), (1, i64::MAX)] {
                let e = source.elements(&name, first, count).unwrap_err();
                assert!(matches!(e, RecordError::Range { has: 4, .. }), "{first}, {count}: {e}");
            }
            assert!(matches!(source.elements("none", 0, 1), Err(RecordError::Missing(_))));
        }
    }
}
