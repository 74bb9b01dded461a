//! Resource quantities as Kubernetes writes them: `250m`, `1.5`, `64Mi`, `1G`, `1e3`.
//!
//! A quantity is kept as the text the user wrote (so it round-trips) and compared by its value,
//! held exactly in thousandths (milli-units) as an `i128`.

use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug)]
pub struct Quantity {
    text: String,
    milli: i128,
}

impl Quantity {
    pub fn from_milli(milli: i128) -> Self {
        let text = if milli % 1000 == 0 {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        };
        Quantity { text, milli }
    }

    pub fn from_bytes(bytes: i128) -> Self {
        let (text, _) = [("Gi", 1i128 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)]
            .iter()
            .find(|(_, unit)| bytes != 0 && bytes % unit == 0)
            .map(|(suffix, unit)| (format!("{}{suffix}", bytes / unit), ()))
            .unwrap_or_else(|| (bytes.to_string(), ()));
        Quantity {
            text,
            milli: bytes * 1000,
        }
    }

    /// The value in thousandths of a unit (for cpu: millicores).
    pub fn milli_value(&self) -> i128 {
        self.milli
    }

    /// The value in whole units, rounded up (for memory: bytes).
    pub fn value(&self) -> i128 {
        (self.milli + 999).div_euclid(1000)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_negative(&self) -> bool {
        self.milli < 0
    }
}

fn suffix_scale(suffix: &str) -> Option<(i128, i32)> {
    // (binary multiplier, decimal exponent): exactly one of them applies.
    Some(match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        _ => return None,
    })
}

impl FromStr for Quantity {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let err = |message: &str| Error::Quantity {
            input: input.to_string(),
            message: message.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        let (negative, body) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, rest) = body.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err("expected a number such as 250m, 1.5 or 64Mi"));
        }
        let (mult, mut exp) = if let Some(e) = rest.strip_prefix(['e', 'E']) {
            let e: i32 = e.parse().map_err(|_| err("bad exponent"))?;
            (1, e)
        } else {
            suffix_scale(rest).ok_or_else(|| {
                err("unknown suffix (use m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei)")
            })?
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let mut mantissa: i128 = if digits.is_empty() {
            0
        } else {
            if digits.len() > 30 {
                return Err(err("too large"));
            }
            digits.parse().map_err(|_| err("not a number"))?
        };
        exp -= frac_part.len() as i32;
        // Scale to milli-units: value * 1000 = mantissa * mult * 10^(exp+3).
        exp += 3;
        mantissa = mantissa.checked_mul(mult).ok_or_else(|| err("too large"))?;
        let milli = if exp >= 0 {
            if exp > 30 {
                return Err(err("too large"));
            }
            mantissa
                .checked_mul(10i128.pow(exp as u32))
                .ok_or_else(|| err("too large"))?
        } else {
            let div = 10i128.checked_pow((-exp) as u32).unwrap_or(i128::MAX);
            // Kubernetes rounds sub-milli precision up.
            (mantissa + div - 1) / div
        };
        Ok(Quantity {
            text: input.to_string(),
            milli: if negative { -milli } else { milli },
        })
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.milli == other.milli
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.milli.cmp(&other.milli)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 250m, 1 or 64Mi")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_compares_like_kubernetes() {
        assert!(q("100m") < q("1"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert_eq!(q("0.5"), q("500m"));
        assert_eq!(q("1k"), q("1000"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("64Mi").value(), 64 * 1024 * 1024);
        assert_eq!(q("250m").milli_value(), 250);
        assert_eq!(q("1.5Gi").value(), 3 * 512 * 1024 * 1024);
        assert_eq!(q("1n").milli_value(), 1, "sub-milli rounds up");
        assert!(q("-1").is_negative());
        assert_eq!(q("1G"), q("1000M"));
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for bad in [
            "",
            "abc",
            "1Xi",
            "1.2.3",
            ".",
            "1 Mi",
            "Mi",
            "1e",
            "99999999999999999999999999999999Ei",
        ] {
            assert!(
                bad.parse::<Quantity>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn keeps_the_written_text() {
        assert_eq!(q("64Mi").to_string(), "64Mi");
        assert_eq!(Quantity::from_bytes(64 << 20).to_string(), "64Mi");
        assert_eq!(Quantity::from_milli(1500).to_string(), "1500m");
        assert_eq!(Quantity::from_milli(2000).to_string(), "2");
    }
}
