//! Parsing of the HTTP `Retry-After` header (RFC 9110 §10.2.3) that pusher sends
//! with a 429 or 503 on the WebSocket upgrade (design.md §4, §6).

use std::time::{Duration, SystemTime};

/// Parses an RFC 9110 `Retry-After` value: either delay-seconds (`"120"`) or an
/// HTTP-date (`"Sun, 06 Nov 1994 08:49:37 GMT"`, or the obsolete RFC 850 and
/// asctime forms).
///
/// - surrounding whitespace is tolerated;
/// - an HTTP-date at or before `now` gives `Some(Duration::ZERO)`;
/// - empty, malformed, signed (`"-1"`, `"+5"`) or fractional (`"1.5"`) values give
///   `None`, so the caller falls back to its exponential backoff;
/// - the result is clamped to `max`, including delay-seconds too large for a `u64`.
pub fn parse_retry_after(value: &str, now: SystemTime, max: Duration) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        // delay-seconds = 1*DIGIT. All digits but too big for u64 is still a valid,
        // merely enormous, delay: it clamps to `max` instead of being ignored.
        let delay = value.parse::<u64>().map_or(max, |secs| Duration::from_secs(secs).min(max));
        return Some(delay);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    // A date in the past means "retry now".
    let delay = at.duration_since(now).unwrap_or(Duration::ZERO);
    Some(delay.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: Duration = Duration::from_secs(300);

    fn now() -> SystemTime {
        // A fixed, whole-second instant so HTTP-date round trips are exact.
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn parse(value: &str) -> Option<Duration> {
        parse_retry_after(value, now(), MAX)
    }

    #[test]
    fn delay_seconds() {
        assert_eq!(parse("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("007"), Some(Duration::from_secs(7)));
        assert_eq!(parse("300"), Some(MAX));
    }

    #[test]
    fn surrounding_whitespace_is_tolerated() {
        assert_eq!(parse(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse("\t42\t"), Some(Duration::from_secs(42)));
    }

    #[test]
    fn malformed_values_are_ignored() {
        for value in ["", "   ", "-1", "+5", "abc", "1.5", "1e3", "5s", "1 2", "٣"] {
            assert_eq!(parse(value), None, "{value:?}");
        }
    }

    #[test]
    fn large_delay_seconds_clamp_to_max() {
        assert_eq!(parse("301"), Some(MAX));
        assert_eq!(parse("18446744073709551615"), Some(MAX));
        assert_eq!(parse("99999999999999999999"), Some(MAX));
    }

    #[test]
    fn http_date_in_the_future() {
        let value = httpdate::fmt_http_date(now() + Duration::from_secs(5));
        assert_eq!(parse(&value), Some(Duration::from_secs(5)));
        let padded = format!("  {value} ");
        assert_eq!(parse(&padded), Some(Duration::from_secs(5)));
    }

    #[test]
    fn http_date_from_the_real_clock_is_about_right() {
        // HTTP-dates have whole seconds, so up to one second is truncated away.
        let now = SystemTime::now();
        let value = httpdate::fmt_http_date(now + Duration::from_secs(5));
        let delay = parse_retry_after(&value, now, MAX).unwrap();
        assert!(delay > Duration::from_secs(4) && delay <= Duration::from_secs(5), "{delay:?}");
    }

    #[test]
    fn http_date_in_the_past_or_now_means_zero() {
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(3600));
        assert_eq!(parse(&past), Some(Duration::ZERO));
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse(&httpdate::fmt_http_date(now())), Some(Duration::ZERO));
    }

    #[test]
    fn http_date_far_in_the_future_clamps_to_max() {
        assert_eq!(parse("Fri, 31 Dec 9999 23:59:59 GMT"), Some(MAX));
        let value = httpdate::fmt_http_date(now() + Duration::from_secs(86_400));
        assert_eq!(parse(&value), Some(MAX));
    }

    #[test]
    fn obsolete_http_date_forms_are_accepted() {
        // RFC 9110's example instant in the RFC 850 and asctime forms.
        assert_eq!(
            parse_retry_after(
                "Sunday, 06-Nov-94 08:49:37 GMT",
                SystemTime::UNIX_EPOCH,
                Duration::MAX
            ),
            Some(Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:37 1994", SystemTime::UNIX_EPOCH, Duration::MAX),
            Some(Duration::from_secs(784_111_777))
        );
    }

    #[test]
    fn max_of_zero_clamps_everything() {
        assert_eq!(parse_retry_after("60", now(), Duration::ZERO), Some(Duration::ZERO));
    }

    proptest! {
        #[test]
        fn never_panics_and_respects_max(value in any::<String>(), max_secs in 0u64..1_000_000) {
            let max = Duration::from_secs(max_secs);
            if let Some(delay) = parse_retry_after(&value, now(), max) {
                prop_assert!(delay <= max);
            }
        }

        #[test]
        fn never_panics_on_header_like_text(value in "[ \\t0-9A-Za-z,:+.-]{0,40}") {
            if let Some(delay) = parse_retry_after(&value, now(), MAX) {
                prop_assert!(delay <= MAX);
            }
        }

        #[test]
        fn any_u64_delay_seconds_parses(secs in any::<u64>()) {
            let expected = Duration::from_secs(secs).min(MAX);
            prop_assert_eq!(parse(&secs.to_string()), Some(expected));
        }
    }
}
