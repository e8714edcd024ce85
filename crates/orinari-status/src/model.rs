//! The Statuspage vocabulary: component statuses, page indicator, incident
//! and maintenance statuses, impacts, and how they combine.

use std::fmt;

/// A component's status, ordered from best to worst (maintenance apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComponentStatus {
    /// Working.
    Operational,
    /// Slow or flaky, but working.
    DegradedPerformance,
    /// Failing for some.
    PartialOutage,
    /// Failing for all.
    MajorOutage,
    /// In a maintenance window.
    UnderMaintenance,
}

impl ComponentStatus {
    /// Every status, in the order the contract lists them.
    pub const ALL: [Self; 5] = [
        Self::Operational,
        Self::DegradedPerformance,
        Self::PartialOutage,
        Self::MajorOutage,
        Self::UnderMaintenance,
    ];

    /// The Statuspage string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operational => "operational",
            Self::DegradedPerformance => "degraded_performance",
            Self::PartialOutage => "partial_outage",
            Self::MajorOutage => "major_outage",
            Self::UnderMaintenance => "under_maintenance",
        }
    }

    /// Parse the Statuspage string.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Words for people (the page never shows status by colour alone).
    pub fn label(self) -> &'static str {
        match self {
            Self::Operational => "Operational",
            Self::DegradedPerformance => "Degraded performance",
            Self::PartialOutage => "Partial outage",
            Self::MajorOutage => "Major outage",
            Self::UnderMaintenance => "Under maintenance",
        }
    }

    /// Severity for "worst of": maintenance ranks above a degradation (it is
    /// announced) and below an outage (an outage during maintenance is news).
    pub fn severity(self) -> u8 {
        match self {
            Self::Operational => 0,
            Self::DegradedPerformance => 1,
            Self::UnderMaintenance => 2,
            Self::PartialOutage => 3,
            Self::MajorOutage => 4,
        }
    }

    /// The worse of two statuses.
    pub fn worst(self, other: Self) -> Self {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// Whether time in this status counts as downtime (maintenance is excluded
    /// from uptime entirely; a degradation is still up).
    pub fn is_down(self) -> bool {
        matches!(self, Self::PartialOutage | Self::MajorOutage)
    }
}

impl fmt::Display for ComponentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An incident's impact, and the page indicator (same scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Impact {
    /// No impact.
    None,
    /// Minor.
    Minor,
    /// Major.
    Major,
    /// Critical.
    Critical,
    /// A scheduled maintenance (for maintenances only; ranks like `none`
    /// for the page indicator, which shows maintenance in its description).
    Maintenance,
}

impl Impact {
    /// The Statuspage string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Critical => "critical",
            Self::Maintenance => "maintenance",
        }
    }

    /// Parse an incident impact (`maintenance` is not one).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::None,
            Self::Minor,
            Self::Major,
            Self::Critical,
            Self::Maintenance,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    fn rank(self) -> u8 {
        match self {
            Self::None | Self::Maintenance => 0,
            Self::Minor => 1,
            Self::Major => 2,
            Self::Critical => 3,
        }
    }

    /// The indicator a component status maps to (Statuspage's documented map).
    pub fn of_component(s: ComponentStatus) -> Self {
        match s {
            ComponentStatus::Operational | ComponentStatus::UnderMaintenance => Self::None,
            ComponentStatus::DegradedPerformance => Self::Minor,
            ComponentStatus::PartialOutage => Self::Major,
            ComponentStatus::MajorOutage => Self::Critical,
        }
    }

    /// The larger of two impacts.
    pub fn max(self, other: Self) -> Self {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// Where an incident is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IncidentStatus {
    /// Looking into it.
    Investigating,
    /// Cause known.
    Identified,
    /// Fix applied, watching.
    Monitoring,
    /// Over.
    Resolved,
    /// Write-up published.
    Postmortem,
}

impl IncidentStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 5] = [
        Self::Investigating,
        Self::Identified,
        Self::Monitoring,
        Self::Resolved,
        Self::Postmortem,
    ];

    /// The Statuspage string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Investigating => "investigating",
            Self::Identified => "identified",
            Self::Monitoring => "monitoring",
            Self::Resolved => "resolved",
            Self::Postmortem => "postmortem",
        }
    }

    /// Parse the Statuspage string.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Investigating, identified or monitoring.
    pub fn is_unresolved(self) -> bool {
        matches!(
            self,
            Self::Investigating | Self::Identified | Self::Monitoring
        )
    }

    /// Whether an update may move an incident from `self` to `to`.
    ///
    /// Unresolved statuses move freely among themselves (an incident can go
    /// back to investigating when a fix does not hold) and to resolved; a
    /// resolved incident can be reopened or get its postmortem; a postmortem
    /// is final (updates may still be added in the same status).
    pub fn can_move_to(self, to: Self) -> bool {
        match (self, to) {
            (a, b) if a == b => true,
            (a, _) if a.is_unresolved() => to != Self::Postmortem,
            (Self::Resolved, b) => b == Self::Postmortem || b.is_unresolved(),
            _ => false,
        }
    }
}

/// Where a scheduled maintenance is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaintenanceStatus {
    /// Announced, not started.
    Scheduled,
    /// In the window.
    InProgress,
    /// Work done, checking.
    Verifying,
    /// Over.
    Completed,
}

impl MaintenanceStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 4] = [
        Self::Scheduled,
        Self::InProgress,
        Self::Verifying,
        Self::Completed,
    ];

    /// The Statuspage string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::InProgress => "in_progress",
            Self::Verifying => "verifying",
            Self::Completed => "completed",
        }
    }

    /// Parse the Statuspage string.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Lifecycle position (a maintenance only moves forward).
    pub fn step(self) -> u8 {
        match self {
            Self::Scheduled => 0,
            Self::InProgress => 1,
            Self::Verifying => 2,
            Self::Completed => 3,
        }
    }

    /// In progress or verifying: components are under maintenance.
    pub fn is_active(self) -> bool {
        matches!(self, Self::InProgress | Self::Verifying)
    }
}

/// The page's rollup: `indicator` and its description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageStatus {
    /// `none | minor | major | critical`.
    pub indicator: Impact,
    /// Statuspage's wording.
    pub description: &'static str,
}

/// `indicator = max(worst unresolved incident impact, map(worst component))`
/// (see the compatibility notes); the description follows Atlassian's list.
pub fn page_status(
    components: impl IntoIterator<Item = ComponentStatus>,
    unresolved_impacts: impl IntoIterator<Item = Impact>,
    maintenance_active: bool,
) -> PageStatus {
    let mut worst = ComponentStatus::Operational;
    let mut any_maint = maintenance_active;
    for c in components {
        any_maint |= c == ComponentStatus::UnderMaintenance;
        worst = worst.worst(c);
    }
    let incident = unresolved_impacts
        .into_iter()
        .fold(Impact::None, Impact::max);
    let indicator = incident.max(Impact::of_component(worst));
    let description = match indicator {
        Impact::Critical => "Major System Outage",
        Impact::Major => "Partial System Outage",
        Impact::Minor if worst == ComponentStatus::DegradedPerformance => "Degraded System Service",
        Impact::Minor => "Minor Service Outage",
        Impact::None | Impact::Maintenance if any_maint => "Service Under Maintenance",
        Impact::None | Impact::Maintenance => "All Systems Operational",
    };
    PageStatus {
        indicator,
        description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for s in ComponentStatus::ALL {
            assert_eq!(ComponentStatus::parse(s.as_str()), Some(s));
        }
        for s in IncidentStatus::ALL {
            assert_eq!(IncidentStatus::parse(s.as_str()), Some(s));
        }
        for s in MaintenanceStatus::ALL {
            assert_eq!(MaintenanceStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ComponentStatus::parse("down"), None);
    }

    #[test]
    fn page_indicator_is_the_worst_of_components_and_incidents() {
        use ComponentStatus as C;
        let p = page_status([C::Operational, C::Operational], [], false);
        assert_eq!(
            (p.indicator, p.description),
            (Impact::None, "All Systems Operational")
        );
        let p = page_status([C::Operational, C::DegradedPerformance], [], false);
        assert_eq!(
            (p.indicator, p.description),
            (Impact::Minor, "Degraded System Service")
        );
        let p = page_status([C::PartialOutage, C::DegradedPerformance], [], false);
        assert_eq!(p.indicator, Impact::Major);
        let p = page_status([C::MajorOutage], [Impact::Minor], false);
        assert_eq!(
            (p.indicator, p.description),
            (Impact::Critical, "Major System Outage")
        );
        let p = page_status([C::Operational], [Impact::Major], false);
        assert_eq!(p.indicator, Impact::Major);
        let p = page_status([C::Operational], [Impact::Minor], false);
        assert_eq!(p.description, "Minor Service Outage");
        let p = page_status([C::UnderMaintenance, C::Operational], [], false);
        assert_eq!(
            (p.indicator, p.description),
            (Impact::None, "Service Under Maintenance")
        );
        let p = page_status([], [], false);
        assert_eq!(p.indicator, Impact::None);
    }

    #[test]
    fn incident_transitions() {
        use IncidentStatus as I;
        assert!(I::Investigating.can_move_to(I::Identified));
        assert!(I::Identified.can_move_to(I::Monitoring));
        assert!(I::Monitoring.can_move_to(I::Resolved));
        assert!(I::Monitoring.can_move_to(I::Investigating));
        assert!(I::Resolved.can_move_to(I::Postmortem));
        assert!(I::Resolved.can_move_to(I::Investigating));
        assert!(!I::Investigating.can_move_to(I::Postmortem));
        assert!(!I::Postmortem.can_move_to(I::Resolved));
        assert!(!I::Postmortem.can_move_to(I::Investigating));
        assert!(I::Postmortem.can_move_to(I::Postmortem));
    }
}
