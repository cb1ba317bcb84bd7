//! Calendar arithmetic for timestamps shown to people (HTTP `Date` headers,
//! the CLI's message times), without a date library.

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, minute, second.
    pub hms: (u32, u32, u32),
    /// Day of the week, 0 = Monday.
    pub weekday: u32,
}

/// The UTC calendar time of `unix` seconds (civil-from-days, after Howard
/// Hinnant's algorithm).
pub fn utc(unix: u64) -> Utc {
    let days = (unix / 86_400) as i64;
    let rem = (unix % 86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    Utc {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hms: (rem / 3600, (rem / 60) % 60, rem % 60),
        // 1970-01-01 was a Thursday.
        weekday: ((days + 3).rem_euclid(7)) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        let t = utc(784_111_777);
        assert_eq!(
            (t.year, t.month, t.day, t.hms, t.weekday),
            (1994, 11, 6, (8, 49, 37), 6)
        );
        let t = utc(0);
        assert_eq!((t.year, t.month, t.day, t.weekday), (1970, 1, 1, 3));
        let t = utc(1_795_132_800);
        assert_eq!((t.year, t.month, t.day), (2026, 11, 20));
    }
}
