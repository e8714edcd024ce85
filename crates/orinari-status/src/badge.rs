//! SVG status badges (`label | message`), readable without colour: the
//! words carry the status and the SVG has a `<title>` for screen readers.

use crate::model::{ComponentStatus, Impact};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Approximate width of text in 11px Verdana (good enough for a badge).
fn width(s: &str) -> usize {
    s.chars()
        .map(|c| if c.is_ascii_uppercase() { 8 } else { 7 })
        .sum::<usize>()
        + 10
}

/// Colour for a status (the words still say it).
pub fn colour_of(status: Option<ComponentStatus>, indicator: Impact) -> &'static str {
    match status {
        Some(ComponentStatus::Operational) => "#1f7a36",
        Some(ComponentStatus::DegradedPerformance) => "#8a6100",
        Some(ComponentStatus::PartialOutage) => "#a14a00",
        Some(ComponentStatus::MajorOutage) => "#b3261e",
        Some(ComponentStatus::UnderMaintenance) => "#1d5fa8",
        None => match indicator {
            Impact::None | Impact::Maintenance => "#1f7a36",
            Impact::Minor => "#8a6100",
            Impact::Major => "#a14a00",
            Impact::Critical => "#b3261e",
        },
    }
}

/// A flat two-part badge.
pub fn badge(label: &str, message: &str, colour: &str) -> String {
    let (lw, mw) = (width(label), width(message));
    let total = lw + mw;
    let (label, message) = (esc(label), esc(message));
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total}\" height=\"20\" role=\"img\" aria-label=\"{label}: {message}\">\
<title>{label}: {message}</title>\
<rect width=\"{lw}\" height=\"20\" fill=\"#444\"/><rect x=\"{lw}\" width=\"{mw}\" height=\"20\" fill=\"{colour}\"/>\
<g fill=\"#fff\" text-anchor=\"middle\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
<text x=\"{lx}\" y=\"14\">{label}</text><text x=\"{mx}\" y=\"14\">{message}</text></g></svg>",
        lx = lw / 2,
        mx = lw + mw / 2,
    )
}
