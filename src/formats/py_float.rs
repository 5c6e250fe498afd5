//! Python's float syntax: `repr(float)` as `str(x)`/`f"{x}"` print it, and `float(text)`.
//!
//! Both seed files print numbers this way: the CSVs one per line (`f"{t}"` of `tensor.tolist()`,
//! so an f32 value printed as the f64 it converts to exactly), and the thresholds JSON
//! (`json.dump` uses `float.__repr__`).
//!
//! `repr` is the shortest digit string that reads back to the same f64 (ties to the closest), laid
//! out by CPython's rule for format code `'r'`: with `decpt` the position of the decimal point
//! relative to the first significant digit (`0.1` has decpt 0, `1.0` has 1), scientific notation
//! when `decpt <= -4` or `decpt > 16`, with at least two exponent digits and an explicit sign
//! (`1e-05`, `1.5e+16`); otherwise positional with at least one digit after the point (`1.0`,
//! `0.0001`, `1000000000000000.0`). Specials: `nan` (whatever its sign bit), `inf`, `-inf`, `-0.0`.
//! The digits come from `ryu` (shortest round-trip, the same digits as CPython's `dtoa` mode 0).

/// Appends Python's `repr(x)` to `out`.
pub fn write_repr(out: &mut Vec<u8>, x: f64) {
    if x.is_nan() {
        out.extend_from_slice(b"nan");
        return;
    }
    if x.is_infinite() {
        out.extend_from_slice(if x > 0.0 { b"inf" } else { b"-inf" });
        return;
    }
    if x.is_sign_negative() {
        out.push(b'-');
    }
    if x == 0.0 {
        out.extend_from_slice(b"0.0");
        return;
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(x.abs()).as_bytes();
    // Decompose ryu's output (e.g. "1234.5", "0.00012", "1.5e-7", "1e16") into significant digits
    // and decpt.
    let (mantissa, exponent) = match text.iter().position(|&c| c == b'e' || c == b'E') {
        Some(i) => (&text[..i], parse_exponent(&text[i + 1..])),
        None => (text, 0),
    };
    let mut digits = [0u8; 32];
    let mut n = 0usize;
    let mut point = None;
    for &c in mantissa {
        if c == b'.' {
            point = Some(n);
        } else {
            digits[n] = c;
            n += 1;
        }
    }
    let mut decpt = point.unwrap_or(n) as i32 + exponent;
    let mut start = 0;
    while start < n && digits[start] == b'0' {
        start += 1;
        decpt -= 1;
    }
    while n > start + 1 && digits[n - 1] == b'0' {
        n -= 1;
    }
    let digits = &digits[start..n];
    if decpt <= -4 || decpt > 16 {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = decpt - 1;
        out.push(b'e');
        out.push(if e < 0 { b'-' } else { b'+' });
        // |e| <= 324: two or three digits.
        let e = e.unsigned_abs();
        if e >= 100 {
            out.push(b'0' + (e / 100) as u8);
        }
        out.push(b'0' + (e / 10 % 10) as u8);
        out.push(b'0' + (e % 10) as u8);
    } else if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-decpt) as usize));
        out.extend_from_slice(digits);
    } else {
        let d = decpt as usize;
        if d >= digits.len() {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', d - digits.len()));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..d]);
            out.push(b'.');
            out.extend_from_slice(&digits[d..]);
        }
    }
}

/// Python's `repr(x)` for an f64.
pub fn repr(x: f64) -> String {
    let mut out = Vec::with_capacity(24);
    write_repr(&mut out, x);
    // Only ASCII is ever written.
    String::from_utf8(out).unwrap_or_default()
}

/// Python's `float(text)` for the forms Python's tools write and accept: surrounding whitespace
/// is ignored; decimal and scientific notation, `nan`, `inf`, `infinity` in any case, with an
/// optional sign. `None` for anything else (Python would raise `ValueError`). Python's digit
/// separators (`1_000.5`) are not accepted.
pub fn parse(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() || t.contains('_') {
        return None;
    }
    t.parse::<f64>().ok()
}

fn parse_exponent(bytes: &[u8]) -> i32 {
    let (neg, digits) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let v = digits.iter().fold(0i32, |acc, &c| acc * 10 + i32::from(c - b'0'));
    if neg { -v } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Edge cases; the expected strings were printed by CPython 3.11's `repr`.
    #[test]
    fn special_and_boundary_values_match_python() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-1.0, "-1.0"),
            (f64::NAN, "nan"),
            (-f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (1e-6, "1e-06"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (0.00012345, "0.00012345"),
            (0.5, "0.5"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (9999999999999998.0, "9999999999999998.0"),
            (1e22, "1e+22"),
            (1e23, "1e+23"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
            (0.1f32 as f64, "0.10000000149011612"),
            (1e-6f32 as f64, "9.999999974752427e-07"),
            (0.0001220703125, "0.0001220703125"),
            (65504.0, "65504.0"),
            (1.0133e-6f32 as f64, "1.0132999932466191e-06"),
            (100.0, "100.0"),
            (-2.5e-7, "-2.5e-07"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for &(x, want) in cases {
            assert_eq!(repr(x), want, "repr({x:?})");
        }
    }

    /// 4000 values (random f64 bit patterns, f32 and f16 values, edge cases) and CPython's repr of
    /// each, made by `scripts/reference/make_py_float_fixture.py`.
    #[test]
    fn repr_matches_cpython_on_the_committed_fixture() {
        let fixture = include_str!("../../tests/fixtures/py_float/reprs.txt");
        let mut checked = 0;
        for line in fixture.lines().filter(|l| !l.starts_with('#')) {
            let (bits, want) = line.split_once(' ').unwrap();
            let x = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
            assert_eq!(repr(x), want, "bits {bits}");
            if !x.is_nan() {
                assert_eq!(parse(want).unwrap().to_bits(), x.to_bits(), "parse {want}");
            }
            checked += 1;
        }
        assert_eq!(checked, 4018);
    }

    #[test]
    fn parse_accepts_what_python_float_accepts() {
        assert_eq!(parse("1.0\n"), Some(1.0));
        assert_eq!(parse("  1e-06 "), Some(1e-6));
        assert!(parse("nan").unwrap().is_nan());
        assert!(parse("NaN").unwrap().is_nan());
        assert_eq!(parse("inf"), Some(f64::INFINITY));
        assert_eq!(parse("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse("Infinity"), Some(f64::INFINITY));
        assert_eq!(parse("+1.5"), Some(1.5));
        assert_eq!(parse(""), None);
        assert_eq!(parse("abc"), None);
        assert_eq!(parse("GPU shape torch.Size([1])"), None);
    }

    #[test]
    fn repr_round_trips_random_f32_and_f64_values() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x64 = f64::from_bits(state);
            let x32 = f32::from_bits((state >> 32) as u32) as f64;
            for x in [x64, x32] {
                let s = repr(x);
                let back = parse(&s).unwrap();
                assert!(back.to_bits() == x.to_bits() || (x.is_nan() && back.is_nan()), "{x:?} -> {s}");
            }
        }
    }
}
