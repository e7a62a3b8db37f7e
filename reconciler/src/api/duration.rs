//! Go-style durations (`30s`, `1m30s`, `1.5h`, `250ms`), the syntax of every duration field and
//! of CEL's `duration()` that validates them in the CRD schema. Parsed here again because the
//! reconciler must never trust that the schema ran (old CRDs, direct etcd writes).

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// The text is empty.
    #[error("duration '{0}' is empty")]
    Empty(String),
    /// Not a sequence of `<number><unit>` with unit `ms`, `s`, `m` or `h`.
    #[error("duration '{0}' is not a Go duration such as 30s, 5m or 1h30m")]
    Syntax(String),
    /// Zero (every duration field needs a positive value).
    #[error("duration '{0}' must be greater than 0")]
    NotPositive(String),
    /// Longer than the maximum (the second field, [`MAX`]).
    #[error("duration '{0}' exceeds the maximum of {1:?}")]
    TooLong(String, Duration),
}

/// The largest duration any field accepts (the CRD schema enforces the same bound).
pub const MAX: Duration = Duration::from_secs(720 * 3600);

/// Parses a positive Go duration no longer than [`MAX`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty(text.to_owned()));
    }
    let syntax = || DurationError::Syntax(text.to_owned());
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(syntax)?;
        let (number, tail) = rest.split_at(number_len);
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(syntax());
        }
        let value: f64 = number.parse().map_err(|_| syntax())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let seconds = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(syntax()),
        };
        total += value * seconds;
        if total > MAX.as_secs_f64() {
            return Err(DurationError::TooLong(text.to_owned(), MAX));
        }
        rest = next;
    }
    if total <= 0.0 {
        return Err(DurationError::NotPositive(text.to_owned()));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("720h"), Ok(MAX));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in ["s", "10", "10x", "-5s", "1d", "1.s", ".5s", "5 s", "1h-1m"] {
            assert_eq!(parse(bad), Err(DurationError::Syntax(bad.into())), "{bad}");
        }
        assert_eq!(parse(""), Err(DurationError::Empty(String::new())));
        assert_eq!(parse("0s"), Err(DurationError::NotPositive("0s".into())));
        assert!(matches!(parse("721h"), Err(DurationError::TooLong(..))));
        assert!(matches!(
            parse("99999999999999999999h"),
            Err(DurationError::TooLong(..))
        ));
    }
}
