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
    /// Arrays and objects nest deeper than [`MAX_DEPTH`] (the JSON5 parser recurses, and would
    /// overflow the stack).
    #[error("not valid JSON here: arrays and objects nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The deepest nesting of arrays and objects [`PyJson::parse`] reads (serde_json's limit too).
pub const MAX_DEPTH: usize = 128;

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
        if nesting_depth(text) > MAX_DEPTH {
            return Err(PyJsonError::TooDeep);
        }
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

/// The deepest nesting of `[` and `{` in JSON5 text, outside strings and comments (an upper
/// bound of the parsed value's depth; brackets the parser would reject count too).
fn nesting_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                while let Some(s) = chars.next() {
                    match s {
                        '\\' => {
                            chars.next();
                        }
                        s if s == c => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for s in chars.by_ref() {
                    if s == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut star = false;
                for s in chars.by_ref() {
                    if star && s == '/' {
                        break;
                    }
                    star = s == '*';
                }
            }
            '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
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
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // Found by tests/fuzz_readers.rs: 100000 nested arrays aborted the process (stack overflow
        // in the JSON5 parser), which no caller can catch.
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(matches!(PyJson::parse(&deep(100_000)), Err(PyJsonError::TooDeep)));
        assert!(matches!(PyJson::parse(&format!("{{\"a\": {}}}", deep(MAX_DEPTH))), Err(PyJsonError::TooDeep)));
        assert!(PyJson::parse(&deep(MAX_DEPTH)).is_ok(), "{MAX_DEPTH} levels are read");
        // Brackets in strings and comments do not count.
        let quoted = format!("[\"{0}\", '{0}', /* {0} */ 1 // {0}\n]", "[".repeat(1000));
        assert_eq!(PyJson::parse(&quoted).unwrap(), PyJson::Array(vec![PyJson::Str("[".repeat(1000)), PyJson::Str("[".repeat(1000)), PyJson::Int(1)]));
        assert_eq!(nesting_depth(r#"{"a\"[": ['\'{', {}]}"#), 3);
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
