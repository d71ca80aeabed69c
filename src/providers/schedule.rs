//! Business hours (`[[schedule]]` in the integrations file): whether a team is open at an
//! instant, and when it opens next. Pure: the instant is always given, never read from a
//! clock here, so dry runs with a fixed `--now` give exact answers.
//!
//! Local wall-clock times in an IANA zone, from the tz database compiled into the binary
//! (jiff's bundled tzdb: no system files). An interval `"09:00-18:00"` is open from 09:00
//! inclusive to 18:00 exclusive, local time; `"24:00"` may end a day. A holiday closes the
//! whole local day.

use std::collections::BTreeSet;

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// The weekday keys of a `[[schedule]]` table, Monday first.
pub const DAY_KEYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Minutes since local midnight, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interval {
    /// Opening minute (0..1440).
    pub start: u16,
    /// Closing minute (start < end ≤ 1440).
    pub end: u16,
}

/// Why an interval's text is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntervalError {
    /// Not `HH:MM-HH:MM`.
    #[error("`{0}` is not an interval `HH:MM-HH:MM` (e.g. \"09:00-18:00\")")]
    Syntax(String),
    /// Ends at or before its start.
    #[error("interval `{0}` ends at or before it starts")]
    Backwards(String),
}

fn minute_of(s: &str, allow_24: bool) -> Option<u16> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if m >= 60 {
        return None;
    }
    match h {
        0..=23 => Some(h * 60 + m),
        24 if allow_24 && m == 0 => Some(1440),
        _ => None,
    }
}

impl Interval {
    /// Parses `"HH:MM-HH:MM"` (end may be `"24:00"`).
    pub fn parse(text: &str) -> Result<Interval, IntervalError> {
        let syntax = || IntervalError::Syntax(text.to_string());
        let (a, b) = text.split_once('-').ok_or_else(syntax)?;
        let start = minute_of(a, false).ok_or_else(syntax)?;
        let end = minute_of(b, true).ok_or_else(syntax)?;
        if end <= start {
            return Err(IntervalError::Backwards(text.to_string()));
        }
        Ok(Interval { start, end })
    }

    fn contains(&self, minute: u16) -> bool {
        self.start <= minute && minute < self.end
    }
}

/// One named schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The name integrations refer to.
    pub name: String,
    /// The IANA zone name as written.
    pub timezone: String,
    tz: TimeZone,
    /// Intervals per weekday, Monday first, sorted and disjoint.
    days: [Vec<Interval>; 7],
    holidays: BTreeSet<Date>,
}

/// A time zone name the bundled database does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone `{0}` (an IANA name such as \"America/Sao_Paulo\")")]
pub struct UnknownZone(pub String);

impl Schedule {
    /// A schedule; `days` Monday first. Intervals are sorted here; overlaps are the
    /// caller's to refuse (the integrations file does, with positions).
    pub fn new(
        name: impl Into<String>,
        timezone: &str,
        mut days: [Vec<Interval>; 7],
        holidays: impl IntoIterator<Item = Date>,
    ) -> Result<Schedule, UnknownZone> {
        let tz = TimeZone::get(timezone).map_err(|_| UnknownZone(timezone.to_string()))?;
        for d in &mut days {
            d.sort();
        }
        Ok(Schedule {
            name: name.into(),
            timezone: timezone.to_string(),
            tz,
            days,
            holidays: holidays.into_iter().collect(),
        })
    }

    fn intervals(&self, date: Date) -> &[Interval] {
        if self.holidays.contains(&date) {
            return &[];
        }
        &self.days[date.weekday().to_monday_zero_offset() as usize]
    }

    /// Whether the team is open at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.tz.clone());
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.intervals(local.date())
            .iter()
            .any(|i| i.contains(minute))
    }

    /// The first opening strictly after `at` (or `at` itself when open), in the
    /// schedule's zone; `None` when no day of the next ~year opens.
    pub fn next_open(&self, at: Timestamp) -> Option<Zoned> {
        let now = at.to_zoned(self.tz.clone());
        if self.is_open(at) {
            return Some(now);
        }
        let mut date = now.date();
        // A year and a week covers every weekday past any run of yearly holidays.
        for _ in 0..372 {
            for i in self.intervals(date) {
                let (h, m) = ((i.start / 60) as i8, (i.start % 60) as i8);
                let Ok(time) = Time::new(h, m, 0, 0) else {
                    continue;
                };
                // A start inside a spring-forward gap opens at the first instant after
                // it ("compatible" disambiguation), as a wall clock would show it.
                let Ok(open) = date.to_datetime(time).to_zoned(self.tz.clone()) else {
                    continue;
                };
                if open.timestamp() > at {
                    return Some(open);
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// RFC 3339 with the zone's offset at that instant: `2026-12-23T13:00:00-03:00`.
pub fn rfc3339(z: &Zoned) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Parses an RFC 3339 instant (`--now`, `"now"` in flow tests).
pub fn parse_instant(s: &str) -> Result<std::time::SystemTime, String> {
    let t: Timestamp = s
        .trim()
        .parse()
        .map_err(|e| format!("`{s}` is not an RFC 3339 date-time with an offset: {e}"))?;
    Ok(std::time::SystemTime::from(t))
}

/// The instant of a clock reading, for [`Schedule::is_open`].
pub fn timestamp(t: std::time::SystemTime) -> Timestamp {
    Timestamp::try_from(t).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: &str) -> Interval {
        Interval::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn next(s: &Schedule, at: &str) -> String {
        s.next_open(ts(at)).map(|z| rfc3339(&z)).unwrap_or_default()
    }

    fn atendimento() -> Schedule {
        let week = || vec![iv("09:00-18:00")];
        let days = [
            week(),
            week(),
            vec![iv("13:00-18:00"), iv("09:00-12:00")],
            week(),
            week(),
            vec![],
            vec![],
        ];
        let holidays = [Date::new(2026, 12, 25).unwrap_or_default()];
        Schedule::new("atendimento", "America/Sao_Paulo", days, holidays)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn intervals_parse_and_refuse() {
        assert_eq!(
            iv("09:30-24:00"),
            Interval {
                start: 570,
                end: 1440
            }
        );
        assert!(matches!(
            Interval::parse("18:00-09:00"),
            Err(IntervalError::Backwards(_))
        ));
        assert!(matches!(
            Interval::parse("09:00-09:00"),
            Err(IntervalError::Backwards(_))
        ));
        for bad in ["9:00-18:00", "09:00", "09:60-10:00", "24:00-24:00", "x"] {
            assert!(
                matches!(Interval::parse(bad), Err(IntervalError::Syntax(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_week_with_a_lunch_break_and_a_holiday() {
        let s = atendimento();
        // Wednesday 2026-12-23, lunch break: opens again at 13:00 local.
        assert!(!s.is_open(ts("2026-12-23T12:30:00-03:00")));
        assert_eq!(
            next(&s, "2026-12-23T12:30:00-03:00"),
            "2026-12-23T13:00:00-03:00"
        );
        assert!(s.is_open(ts("2026-12-23T11:59:00-03:00")));
        assert!(!s.is_open(ts("2026-12-23T12:00:00-03:00")), "end exclusive");
        assert!(
            s.is_open(ts("2026-12-23T13:00:00-03:00")),
            "start inclusive"
        );
        // Thursday evening: Friday is Christmas, the weekend is closed → Monday 28th.
        assert_eq!(
            next(&s, "2026-12-24T18:00:00-03:00"),
            "2026-12-28T09:00:00-03:00"
        );
        assert!(!s.is_open(ts("2026-12-25T10:00:00-03:00")), "holiday");
        // Before opening on a working day: the same morning.
        assert_eq!(
            next(&s, "2026-12-22T07:15:00-03:00"),
            "2026-12-22T09:00:00-03:00"
        );
        // The instant is read in the schedule's zone, whatever offset it was given in.
        assert_eq!(
            next(&s, "2026-12-22T11:15:00Z"),
            "2026-12-22T09:00:00-03:00"
        );
        assert_eq!(
            s.next_open(ts("2026-12-22T10:00:00-03:00"))
                .map(|z| rfc3339(&z)),
            Some("2026-12-22T10:00:00-03:00".into()),
            "open now: now"
        );
    }

    #[test]
    fn across_midnight() {
        let days = [
            vec![iv("00:00-02:00"), iv("22:00-24:00")],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![iv("22:00-24:00")],
        ];
        let s = Schedule::new("night", "Europe/Lisbon", days, []).unwrap_or_else(|e| panic!("{e}"));
        // Sunday 2026-12-27 23:59:59 is open, Monday 00:00 too (the next day's interval).
        assert!(s.is_open(ts("2026-12-27T23:59:59Z")));
        assert!(s.is_open(ts("2026-12-28T00:00:00Z")));
        assert!(!s.is_open(ts("2026-12-28T02:00:00Z")));
        assert_eq!(
            next(&s, "2026-12-28T02:00:00Z"),
            "2026-12-28T22:00:00+00:00"
        );
        // Tuesday just after midnight: the next opening is Sunday night.
        assert_eq!(
            next(&s, "2026-12-29T00:00:01Z"),
            "2027-01-03T22:00:00+00:00"
        );
    }

    #[test]
    fn across_daylight_saving_changes() {
        let week = || vec![iv("09:00-17:00")];
        let days = [week(), week(), week(), week(), week(), vec![], vec![]];
        let s = Schedule::new("ny", "America/New_York", days, []).unwrap_or_else(|e| panic!("{e}"));
        // Friday 2027-03-12 17:00 EST (-05:00); clocks go forward on Sunday 14th:
        // Monday opens at 09:00 EDT (-04:00), 13:00Z, not 14:00Z.
        assert_eq!(
            next(&s, "2027-03-12T17:00:00-05:00"),
            "2027-03-15T09:00:00-04:00"
        );
        assert!(s.is_open(ts("2027-03-15T13:00:00Z")));
        assert!(!s.is_open(ts("2027-03-15T12:30:00Z")));
        // And back in November: Friday 2027-11-05 EDT → Monday 8th 09:00 EST.
        assert_eq!(
            next(&s, "2027-11-05T18:00:00-04:00"),
            "2027-11-08T09:00:00-05:00"
        );
        // Lisbon's spring change at 01:00 → 02:00: an opening in the gap opens after it.
        let days = [
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![iv("01:30-03:00")],
        ];
        let s = Schedule::new("lx", "Europe/Lisbon", days, []).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            next(&s, "2027-03-27T12:00:00Z"),
            "2027-03-28T02:30:00+01:00"
        );
    }

    #[test]
    fn unknown_zone_and_never_open() {
        assert!(Schedule::new("x", "Mars/Olympus", Default::default(), []).is_err());
        let s = Schedule::new("x", "UTC", Default::default(), []).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.next_open(ts("2026-12-22T10:00:00Z")).is_none());
    }
}
