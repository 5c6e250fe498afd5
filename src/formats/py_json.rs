//! JSON as Python's `json` module writes and reads it.
//!
//! `get_thresholds.py` writes its file with `json.dump(result_dict, fp)`: separators `", "` and
//! `": "`, no indentation, keys in insertion order, non-ASCII escaped (`ensure_ascii`), floats by
//! `repr` (`1e-07`, `1.0`), and the non-standard `NaN`, `Infinity`, `-Infinity` (`allow_nan`).
//! [`PyJson::to_python_json`] writes exactly that, so a file we write is byte-identical to the one
//! Python would write for the same values.
//!
//! Reading must accept what Python's `json.load` accepts, including `NaN` and `Infinity`, which
//! strict JSON parsers (serde_json) reject, and hand-edited files such as the sample thresholds
//! file (indented, integer `0` for a float, `1.7e-7` exponent spelling). [`PyJson::parse`] reads
//! JSON5, a superset of both; objects keep their key order (a repeated key keeps its first
//! position and its last value, as in Python).

use std::fmt::Write as _;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a JSON text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PyJsonError {
    /// The text is not JSON (nor JSON5).
    #[error("not valid JSON: {0}")]
    Syntax(String),
}

/// A JSON value with the range of Python's: non-finite floats, ordered objects, integers apart
/// from floats.
#[derive(Debug, Clone, PartialEq)]
pub enum PyJson {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer literal that fits an i64.
    Int(i64),
    /// A float (any f64, including NaN and the infinities).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<PyJson>),
    /// An object, in key order.
    Object(Vec<(String, PyJson)>),
}

impl PyJson {
    /// Parses JSON (with Python's `NaN`/`Infinity`) or JSON5 text.
    pub fn parse(text: &str) -> Result<PyJson, PyJsonError> {
        json5::from_str::<PyJson>(text).map_err(|e| PyJsonError::Syntax(e.to_string()))
    }

    /// The text `json.dumps(value)` gives with Python's default arguments.
    pub fn to_python_json(&self) -> String {
        let mut out = String::new();
        self.write_python(&mut out);
        out
    }

    fn write_python(&self, out: &mut String) {
        match self {
            PyJson::Null => out.push_str("null"),
            PyJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            PyJson::Int(i) => {
                let _ = write!(out, "{i}");
            }
            PyJson::Float(x) => write_python_float(out, *x),
            PyJson::Str(s) => write_python_string(out, s),
            PyJson::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_python(out);
                }
                out.push(']');
            }
            PyJson::Object(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_python_string(out, key);
                    out.push_str(": ");
                    value.write_python(out);
                }
                out.push('}');
            }
        }
    }

    /// The value of `key` when this is an object.
    pub fn get(&self, key: &str) -> Option<&PyJson> {
        match self {
            PyJson::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// This number as an f64 (integers convert), or `None` for a non-number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            PyJson::Int(i) => Some(*i as f64),
            PyJson::Float(x) => Some(*x),
            _ => None,
        }
    }

    /// This string, or `None`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyJson::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            PyJson::Null => "null",
            PyJson::Bool(_) => "a boolean",
            PyJson::Int(_) | PyJson::Float(_) => "a number",
            PyJson::Str(_) => "a string",
            PyJson::Array(_) => "an array",
            PyJson::Object(_) => "an object",
        }
    }
}

/// `float.__repr__` as `json` uses it: `NaN`, `Infinity`, `-Infinity` for the non-finite.
fn write_python_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x == f64::INFINITY {
        out.push_str("Infinity");
    } else if x == f64::NEG_INFINITY {
        out.push_str("-Infinity");
    } else {
        out.push_str(&super::py_float::repr(x));
    }
}

/// `json.dumps(s)` with `ensure_ascii=True`: anything outside `' '..='~'` is escaped, `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\b`, `\f` by name, the rest as `\uXXXX` (UTF-16 surrogate pairs above the
/// BMP).
fn write_python_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

impl<'de> Deserialize<'de> for PyJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PyJsonVisitor)
    }
}

struct PyJsonVisitor;

impl<'de> Visitor<'de> for PyJsonVisitor {
    type Value = PyJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<PyJson, E> {
        Ok(PyJson::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<PyJson, E> {
        Ok(PyJson::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<PyJson, E> {
        Ok(PyJson::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<PyJson, E> {
        Ok(PyJson::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<PyJson, E> {
        Ok(i64::try_from(v).map(PyJson::Int).unwrap_or(PyJson::Float(v as f64)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<PyJson, E> {
        Ok(i64::try_from(v).map(PyJson::Int).unwrap_or(PyJson::Float(v as f64)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<PyJson, E> {
        Ok(i64::try_from(v).map(PyJson::Int).unwrap_or(PyJson::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<PyJson, E> {
        Ok(PyJson::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<PyJson, E> {
        Ok(PyJson::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<PyJson, E> {
        Ok(PyJson::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PyJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<PyJson>()? {
            items.push(item);
        }
        Ok(PyJson::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PyJson, A::Error> {
        let mut entries: Vec<(String, PyJson)> = Vec::new();
        let mut index = std::collections::HashMap::new();
        while let Some((key, value)) = map.next_entry::<String, PyJson>()? {
            match index.get(&key) {
                Some(&i) => entries[i] = (key, value),
                None => {
                    index.insert(key.clone(), entries.len());
                    entries.push((key, value));
                }
            }
        }
        Ok(PyJson::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_python_json_dumps_writes() {
        // Expected text printed by CPython 3.11:
        // json.dumps({"model_id": "a--b", "abs_diff": {"x": 1e-07, "y": float("nan"), "z": float("inf")},
        //             "n": -float("inf"), "e": {}, "l": [1, 0.5, "\u00e9\U0001f600\n\"\x7f"]})
        let v = PyJson::Object(vec![
            ("model_id".into(), PyJson::Str("a--b".into())),
            (
                "abs_diff".into(),
                PyJson::Object(vec![
                    ("x".into(), PyJson::Float(1e-7)),
                    ("y".into(), PyJson::Float(f64::NAN)),
                    ("z".into(), PyJson::Float(f64::INFINITY)),
                ]),
            ),
            ("n".into(), PyJson::Float(f64::NEG_INFINITY)),
            ("e".into(), PyJson::Object(vec![])),
            ("l".into(), PyJson::Array(vec![PyJson::Int(1), PyJson::Float(0.5), PyJson::Str("\u{e9}\u{1f600}\n\"\u{7f}".into())])),
        ]);
        assert_eq!(
            v.to_python_json(),
            r#"{"model_id": "a--b", "abs_diff": {"x": 1e-07, "y": NaN, "z": Infinity}, "n": -Infinity, "e": {}, "l": [1, 0.5, "\u00e9\ud83d\ude00\n\"\u007f"]}"#
        );
    }

    #[test]
    fn reads_python_non_finite_numbers_and_hand_formatted_files() {
        let v = PyJson::parse("{\n  \"a\": NaN, \"b\": -Infinity, \"c\": 0,\n \"d\": 1.7258892434335918e-7, \"a\": 2 }").unwrap();
        let PyJson::Object(entries) = &v else { panic!("{v:?}") };
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c", "d"], "first position, last value");
        assert_eq!(v.get("a"), Some(&PyJson::Int(2)));
        assert_eq!(v.get("b").unwrap().as_f64(), Some(f64::NEG_INFINITY));
        assert_eq!(v.get("c").unwrap().as_f64(), Some(0.0));
        assert_eq!(v.get("d").unwrap().as_f64(), Some(1.7258892434335918e-7));
        let nan = PyJson::parse("[NaN]").unwrap();
        assert!(matches!(nan, PyJson::Array(ref a) if a[0].as_f64().unwrap().is_nan()));
        assert!(PyJson::parse("{\"a\": }").is_err());
    }

    #[test]
    fn round_trips_through_python_text() {
        let v = PyJson::Object(vec![
            ("k".into(), PyJson::Array(vec![PyJson::Float(0.1), PyJson::Float(-0.0), PyJson::Float(f64::MAX), PyJson::Null, PyJson::Bool(true)])),
            ("s".into(), PyJson::Str("tab\there \u{1}".into())),
        ]);
        let back = PyJson::parse(&v.to_python_json()).unwrap();
        assert_eq!(back, v);
    }
}
