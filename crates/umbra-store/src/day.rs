//! Days since the Unix epoch: the only time granularity the store keeps.

/// A day number (days since 1970-01-01, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub u32);

impl Day {
    /// The day containing `unix_seconds`.
    pub fn from_unix_seconds(unix_seconds: u64) -> Self {
        Self(u32::try_from(unix_seconds / 86_400).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_down() {
        assert_eq!(Day::from_unix_seconds(0), Day(0));
        assert_eq!(Day::from_unix_seconds(86_399), Day(0));
        assert_eq!(Day::from_unix_seconds(86_400), Day(1));
    }
}
