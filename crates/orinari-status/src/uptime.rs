//! Uptime, computed by time from a component's status history: for each
//! local day, the milliseconds with a known status are split into up and
//! down; maintenance (the component's `under_maintenance` status, and any
//! maintenance window that covers it) is excluded from both; the percentage
//! is rounded down, so any downtime at all shows below 100%.

use crate::model::ComponentStatus;

/// One day of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayUptime {
    /// Local date, `YYYY-MM-DD`.
    pub date: String,
    /// Milliseconds up (operational or degraded).
    pub up_ms: i64,
    /// Milliseconds down (partial or major outage).
    pub down_ms: i64,
    /// Worst status seen that day (maintenance included), if any was known.
    pub worst: Option<ComponentStatus>,
}

impl DayUptime {
    /// Hundredths of a percent, rounded down; `None` with no data.
    pub fn basis_points(&self) -> Option<u32> {
        basis_points(self.up_ms, self.up_ms + self.down_ms)
    }
}

/// `up / observed` in hundredths of a percent, rounded down (so 9999 means
/// 99.99%); `None` when nothing was observed.
pub fn basis_points(up_ms: i64, observed_ms: i64) -> Option<u32> {
    if observed_ms <= 0 {
        return None;
    }
    let bp = (i128::from(up_ms.max(0)) * 10_000) / i128::from(observed_ms);
    u32::try_from(bp.clamp(0, 10_000)).ok()
}

/// `99.99` from basis points.
pub fn percent(bp: u32) -> String {
    format!("{}.{:02}", bp / 100, bp % 100)
}

/// Per-day uptime over `days` (`(date, start_ms, end_ms)`, from
/// [`crate::PageClock::days`]) from a status history (`(at_ms, status)`,
/// oldest first; each status holds until the next, the last until `now`),
/// excluding `maintenance` windows (`(from_ms, until_ms)`).
pub fn daily(
    history: &[(i64, ComponentStatus)],
    maintenance: &[(i64, i64)],
    days: &[(String, i64, i64)],
    now: i64,
) -> Vec<DayUptime> {
    days.iter()
        .map(|(date, start, end)| {
            let mut day = DayUptime {
                date: date.clone(),
                up_ms: 0,
                down_ms: 0,
                worst: None,
            };
            let end = (*end).min(now);
            for (i, (at, status)) in history.iter().enumerate() {
                let until = history.get(i + 1).map_or(now, |(next, _)| *next);
                let (from, to) = ((*at).max(*start), until.min(end));
                if from >= to {
                    continue;
                }
                day.worst = Some(day.worst.map_or(*status, |w| w.worst(*status)));
                if *status == ComponentStatus::UnderMaintenance {
                    continue;
                }
                let counted = (to - from) - overlap(from, to, maintenance);
                if status.is_down() {
                    day.down_ms += counted;
                } else {
                    day.up_ms += counted;
                }
            }
            day
        })
        .collect()
}

/// Milliseconds of `[from, to)` covered by the windows (which may overlap).
fn overlap(from: i64, to: i64, windows: &[(i64, i64)]) -> i64 {
    let mut cut: Vec<(i64, i64)> = windows
        .iter()
        .map(|&(a, b)| (a.max(from), b.min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    cut.sort_unstable();
    let mut total = 0;
    let mut reach = from;
    for (a, b) in cut {
        let a = a.max(reach);
        if b > a {
            total += b - a;
            reach = b;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use ComponentStatus as C;

    const H: i64 = 3_600_000;

    fn day(n: i64) -> (String, i64, i64) {
        (format!("d{n}"), n * 24 * H, (n + 1) * 24 * H)
    }

    #[test]
    fn one_second_of_downtime_is_below_100_percent() {
        let h = [
            (0, C::Operational),
            (H, C::MajorOutage),
            (H + 1000, C::Operational),
        ];
        let d = daily(&h, &[], &[day(0)], 24 * H);
        assert_eq!(d[0].down_ms, 1000);
        assert_eq!(d[0].basis_points(), Some(9999));
        assert_eq!(percent(9999), "99.99");
        assert_eq!(d[0].worst, Some(C::MajorOutage));
    }

    #[test]
    fn maintenance_is_excluded_and_no_data_is_not_up() {
        // Known from 06:00; down 08:00–10:00, of which 09:00–10:00 is a
        // maintenance window; under maintenance (status) 12:00–14:00.
        let h = [
            (6 * H, C::Operational),
            (8 * H, C::MajorOutage),
            (10 * H, C::Operational),
            (12 * H, C::UnderMaintenance),
            (14 * H, C::Operational),
        ];
        let d = daily(&h, &[(9 * H, 10 * H)], &[day(0)], 24 * H);
        assert_eq!(d[0].down_ms, H);
        assert_eq!(d[0].up_ms, 2 * H + 2 * H + 10 * H);
        assert_eq!(d[0].basis_points(), Some(9333)); // 15h of 16h... 14/15 = 93.33
    }

    #[test]
    fn the_last_status_holds_until_now_and_days_split_at_midnight() {
        let h = [(20 * H, C::PartialOutage)];
        let d = daily(&h, &[], &[day(0), day(1)], 26 * H);
        assert_eq!((d[0].down_ms, d[1].down_ms), (4 * H, 2 * H));
        assert_eq!(d[1].basis_points(), Some(0));
        let none = daily(&[], &[], &[day(0)], H);
        assert_eq!(none[0].basis_points(), None);
        assert_eq!(basis_points(5, 5), Some(10_000));
    }
}
