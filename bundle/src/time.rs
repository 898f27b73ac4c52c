//! Unix times as people read them (UTC, RFC 3339), without a date library, and durations as
//! people write them (`90s`, `2d12h`), for both binaries' flags.

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Parses durations such as `90s`, `45m`, `12h`, `30d`, `2w`, `2d12h` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    // A bare number has no unit a reader can be sure of (30 seconds? days?): refuse it.
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{s:?} has no unit; write e.g. {s}d, {s}h, {s}m or {s}s (2w and 2d12h work too)"
        ));
    }
    let d = humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration ({e}); write e.g. 30d, 2w, 2d12h, 45m or 90s")
    })?;
    Ok(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(30 * 86_400));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("1w"), Ok(7 * 86_400));
        assert_eq!(parse_duration("2d12h"), Ok(2 * 86_400 + 12 * 3600));
        assert!(parse_duration("90").unwrap_err().contains("has no unit"));
        assert!(parse_duration("30x").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn known_dates() {
        assert_eq!(super::format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::format_utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
