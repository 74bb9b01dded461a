//! Durations on the command line, as kubectl and the kubelet take them: `30s`, `5m`, `1h30m`,
//! `500ms`, `365d`; a bare number is seconds (`--timeout 300`). Every duration flag of every
//! verb parses through here, so `drain --timeout 20s` and `wait --timeout 20s` agree.

use std::time::Duration;

/// Parses a duration; the error names what is wrong with it.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration: expected a number and a unit (ms, s, m, h, d)".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{s:?}: too long"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{s:?}: expected a number before {rest:?}"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{s:?}: too long"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = Duration::from_millis(match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{s:?}: a number without a unit after another")),
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                ))
            }
        });
        rest = &rest[unit_len..];
        let part = u32::try_from(n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| format!("{s:?}: too long"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{s:?}: too long"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_durations_parse_and_bad_ones_say_why() {
        let ok = [
            ("300", 300_000),
            ("20s", 20_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("365d", 31_536_000_000),
            ("0s", 0),
        ];
        for (s, ms) in ok {
            assert_eq!(parse(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for (s, why) in [
            ("", "empty"),
            ("5x", "unknown unit"),
            ("m5", "expected a number"),
            ("1.5h", "unknown unit"),
            ("99999999999999999999", "too long"),
        ] {
            let e = parse(s).expect_err(s);
            assert!(e.contains(why), "{s}: {e}");
        }
    }
}
