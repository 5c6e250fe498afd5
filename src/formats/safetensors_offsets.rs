//! A check of a safetensors file's tensor offsets against its length, made before the
//! `safetensors` crate reads it (tensor files, captures, golden files, weights, compact files).

use std::collections::HashMap;

/// Checks that each tensor's `data_offsets` end inside the file, before the safetensors crate reads
/// the header: its own check adds them to the header's length unchecked, which overflows (a
/// panic in debug builds) for offsets near `u64::MAX`. A header it cannot parse is left to the
/// crate to report.
pub fn check_data_offsets(bytes: &[u8]) -> Result<(), String> {
    let Some(n) = bytes.get(..8).and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok()) else { return Ok(()) };
    let Some(header) = n.checked_add(8).and_then(|end| bytes.get(8..end)) else { return Ok(()) };
    let data_len = (bytes.len() - 8 - n) as u64;
    let Ok(entries) = serde_json::from_slice::<HashMap<String, serde_json::Value>>(header) else { return Ok(()) };
    for (name, info) in &entries {
        let end = info.get("data_offsets").and_then(|o| o.get(1)).and_then(serde_json::Value::as_u64);
        if let Some(end) = end.filter(|&end| name != "__metadata__" && end > data_len) {
            return Err(format!("tensor {name}'s data ends at byte {end}, past the {data_len} bytes of data in the file"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn offsets_inside_the_data_pass_and_past_it_fail() {
        assert_eq!(check_data_offsets(&file(r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"__metadata__":{"x":"y"}}"#, &[1, 2])), Ok(()));
        let err = check_data_offsets(&file(r#"{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#, &[1, 2])).unwrap_err();
        assert_eq!(err, "tensor a's data ends at byte 3, past the 2 bytes of data in the file");
        // What the crate reports itself is left to it.
        for bytes in [&b""[..], b"\x05\0\0\0\0\0\0\0{", b"\x02\0\0\0\0\0\0\0[]"] {
            assert_eq!(check_data_offsets(bytes), Ok(()));
        }
    }
}
