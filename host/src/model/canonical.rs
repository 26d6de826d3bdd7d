//! The canonical JSON text of an event's payload: the bytes the hash chain
//! covers ([`super::EventHash::chain`]). It is written here, by hand, rather
//! than by `serde_json::to_string`, so that it cannot change with serde_json's
//! features (`preserve_order` keeps maps in insertion order,
//! `arbitrary_precision` keeps numbers as written) or with the float
//! formatter a serde_json release picks. The rules, byte for byte:
//!
//! - No whitespace anywhere.
//! - `null`, `true`, `false` as such.
//! - An object: `{`, its members sorted by the UTF-8 bytes of their keys
//!   (shorter first when one is a prefix of the other), each `"key":value`,
//!   separated by `,`, then `}`. Keys are unique.
//! - An array: `[`, its elements in order separated by `,`, then `]`.
//! - A string: `"`, then each character as itself in UTF-8, except: `"` as
//!   `\"`, `\` as `\\`, U+0008 as `\b`, U+0009 as `\t`, U+000A as `\n`,
//!   U+000C as `\f`, U+000D as `\r`, and every other character below U+0020
//!   as `\u00` and two lowercase hex digits (`\u001f`). Nothing else is
//!   escaped: not `/`, not U+007F, not U+2028, not anything outside ASCII.
//!   Then `"`.
//! - A number that is an integer in `-2^63 ..= 2^64-1`: its decimal digits,
//!   `-` before a negative one, no leading zeros, no `+`, no exponent, no
//!   point (`0`, `-1`, `18446744073709551615`).
//! - Any other number, a finite binary64: the shortest decimal that reads
//!   back as the same binary64 (round to nearest, ties to even), `-` first
//!   when negative (also `-0.0`). With its significant digits `d₁d₂…dₙ` and
//!   decimal exponent `e` (the value is `d₁.d₂…dₙ × 10^e`): when `-5 ≤ e ≤
//!   15`, positional, always with a point and at least one digit after it
//!   (`1.0`, `0.1`, `123456789.0`, `0.00001`, `1e15` as
//!   `1000000000000000.0`); otherwise `d₁`, then `.d₂…dₙ` when `n > 1`, then
//!   `e`, the sign of `e` (`+` or `-`) and its digits without leading zeros
//!   (`1e+16`, `1.5e-7`, `5e-324`, `1.7976931348623157e+308`). This is what
//!   serde_json 1.0.154 writes (by `zmij`).
//!
//! Vectors that pin these rules are kept in `host/tests/vectors/chain.json`.

use serde_json::{Map, Value};

/// `value` as canonical text.
pub fn to_canonical(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(&mut out, value);
    out
}

/// The object `map` as canonical text, without its member `skip` (the
/// event's `kind`, which the chain hashes on its own).
pub(crate) fn object_without(map: &Map<String, Value>, skip: &str) -> String {
    let mut out = String::with_capacity(64);
    write_object(&mut out, map, Some(skip));
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map, None),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>, skip: Option<&str>) {
    // Sorted here, whatever order the map keeps (`preserve_order`).
    let mut members: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .collect();
    members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value);
    }
    out.push('}');
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    use std::fmt::Write;
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else {
        // Without `arbitrary_precision` every other number is a finite f64;
        // with it, this reads the number as one.
        let f = n.as_f64().filter(|f| f.is_finite()).unwrap_or(0.0);
        out.push_str(zmij::Buffer::new().format_finite(f));
    }
}

fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x09 => "\\t",
            0x0a => "\\n",
            0x0c => "\\f",
            0x0d => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_written_as_specified() {
        let cases: &[(Value, &str)] = &[
            (json!(0), "0"),
            (json!(-1), "-1"),
            (json!(i64::MIN), "-9223372036854775808"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(1.0), "1.0"),
            (json!(-0.0), "-0.0"),
            (json!(0.1), "0.1"),
            (json!(1.5e-7), "1.5e-7"),
            (json!(0.00001), "0.00001"),
            (json!(0.000001), "1e-6"),
            (json!(1e15), "1000000000000000.0"),
            (json!(1e16), "1e+16"),
            (json!(123456789.0), "123456789.0"),
            (json!(5e-324), "5e-324"),
            (json!(f64::MAX), "1.7976931348623157e+308"),
        ];
        for (value, text) in cases {
            assert_eq!(to_canonical(value), *text, "{value:?}");
        }
    }

    #[test]
    fn strings_escape_only_what_json_requires() {
        let s = "\" \\ / \u{8}\u{9}\u{a}\u{c}\u{d} \u{0}\u{1}\u{1f} \u{7f} \u{2028} é 😀";
        assert_eq!(
            to_canonical(&json!(s)),
            "\"\\\" \\\\ / \\b\\t\\n\\f\\r \\u0000\\u0001\\u001f \u{7f} \u{2028} é 😀\""
        );
    }

    #[test]
    fn keys_sort_by_their_bytes_whatever_order_the_map_keeps() {
        let mut map = Map::new();
        for k in ["é", "b", "a b", "B", "aa", "a", "_", "a\u{0}"] {
            map.insert(k.into(), json!(k.len()));
        }
        assert_eq!(
            to_canonical(&Value::Object(map.clone())),
            "{\"B\":1,\"_\":1,\"a\":1,\"a\\u0000\":2,\"a b\":3,\"aa\":2,\"b\":1,\"é\":2}"
        );
        assert_eq!(
            object_without(&map, "b"),
            to_canonical(&{
                map.remove("b");
                Value::Object(map)
            })
        );
    }

    /// Under this build's serde_json features the two agree: existing
    /// histories hash as they did when serde_json wrote the text.
    #[test]
    fn it_is_the_text_serde_json_writes_today() {
        let value = json!({
            "z": [1, -2, 3.25, 1e300, -1e-300, 0.1, null, true, false, "a\u{0}\"\\\n"],
            "a": {"y": {}, "x": [], "é": "ü", "\u{1}": 18446744073709551615u64},
            "m": i64::MIN, "n": 1e21, "o": 2.5e-5,
        });
        assert_eq!(to_canonical(&value), value.to_string());
    }
}
