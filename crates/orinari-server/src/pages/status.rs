//! `GET /status`: the public status page, rendered from the status service's
//! snapshot (no store access on the request path). Usable without
//! JavaScript; with it, `assets/status.js` follows `/status/events` and
//! updates the banner, components and incidents in place. Status is always
//! written in words (and a symbol), never shown by colour alone.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orinari_status::model::{ComponentStatus, Impact};
use orinari_status::uptime::percent;
use orinari_status::{PageClock, Snapshot};
use orinari_store::IncidentRow;

use super::assets::{ASSETS, Assets, fnv1a};
use crate::AppState;

const HTML: &str = "text/html; charset=utf-8";
/// Resolved incidents listed under "Past incidents".
const PAST: usize = 10;

#[derive(Template)]
#[template(path = "status.html")]
struct StatusPage<'a> {
    assets: &'a Assets,
    name: &'a str,
    banner_class: &'static str,
    banner_symbol: &'static str,
    banner: &'static str,
    updated_iso: String,
    updated: String,
    time_zone: &'a str,
    components: Vec<ComponentView>,
    active: Vec<IncidentView>,
    maintenance: Vec<IncidentView>,
    past: Vec<IncidentView>,
    emails: bool,
    webhooks: bool,
}

#[derive(Template)]
#[template(path = "status_message.html")]
struct MessagePage<'a> {
    assets: &'a Assets,
    name: &'a str,
    title: &'a str,
    message: &'a str,
}

struct ComponentView {
    id: String,
    name: String,
    description: String,
    is_group: bool,
    in_group: bool,
    status: &'static str,
    label: &'static str,
    symbol: &'static str,
    uptime: String,
    showcase: bool,
    /// Days with data (days without show the "no data" background).
    bars: Vec<Bar>,
}

struct Bar {
    x: usize,
    class: &'static str,
    title: String,
}

struct IncidentView {
    id: String,
    name: String,
    impact: &'static str,
    when: String,
    updates: Vec<UpdateView>,
}

struct UpdateView {
    status: String,
    body: String,
    iso: String,
    at: String,
}

/// Symbol and CSS class of a status; the words come from `label`.
fn symbol(s: ComponentStatus) -> &'static str {
    match s {
        ComponentStatus::Operational => "✓",
        ComponentStatus::DegradedPerformance => "▲",
        ComponentStatus::PartialOutage => "◆",
        ComponentStatus::MajorOutage => "✕",
        ComponentStatus::UnderMaintenance => "⚙",
    }
}

fn impact_words(i: &str) -> &'static str {
    match Impact::parse(i) {
        Some(Impact::Critical) => "Critical impact",
        Some(Impact::Major) => "Major impact",
        Some(Impact::Minor) => "Minor impact",
        Some(Impact::Maintenance) => "Maintenance",
        _ => "No impact",
    }
}

fn incident_view(clock: &PageClock, i: &IncidentRow) -> IncidentView {
    let when = match (i.scheduled_for, i.scheduled_until) {
        (Some(a), Some(b)) => format!("{} – {}", clock.human(a), clock.human(b)),
        _ => clock.human(i.started_at),
    };
    IncidentView {
        id: i.id.clone(),
        name: i.name.clone(),
        impact: impact_words(&i.impact),
        when,
        updates: i
            .updates
            .iter()
            .map(|u| UpdateView {
                status: capitalise(&u.status.replace('_', " ")),
                body: u.body.clone(),
                iso: clock.format(u.created_at),
                at: clock.human(u.created_at),
            })
            .collect(),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn view(snap: &Snapshot, emails: bool, webhooks: bool) -> StatusPage<'_> {
    let clock = &snap.page.clock;
    let (banner_class, banner_symbol) = match snap.status.indicator {
        Impact::Critical => ("critical", "✕"),
        Impact::Major => ("major", "◆"),
        Impact::Minor => ("minor", "▲"),
        Impact::None | Impact::Maintenance if snap.active().next().is_some() => {
            ("maintenance", "⚙")
        }
        Impact::None | Impact::Maintenance => ("none", "✓"),
    };
    let components = snap
        .components
        .iter()
        .map(|c| ComponentView {
            id: c.row.id.clone(),
            name: c.row.name.clone(),
            description: c.row.description.clone().unwrap_or_default(),
            is_group: c.row.is_group,
            in_group: c.row.group_id.is_some(),
            status: c.status.as_str(),
            label: c.status.label(),
            symbol: symbol(c.status),
            uptime: match (c.uptime_30, c.uptime_90) {
                (Some(m), Some(q)) => format!(
                    "{}% uptime over 30 days, {}% over 90 days",
                    percent(m),
                    percent(q)
                ),
                (None, Some(q)) => format!("{}% uptime over 90 days", percent(q)),
                _ => "No data yet".to_string(),
            },
            showcase: c.row.showcase,
            bars: if c.row.showcase {
                c.days
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.worst.is_some())
                    .map(|(x, d)| Bar {
                        x: x * 4,
                        class: match d.worst {
                            None => "u-none",
                            Some(ComponentStatus::Operational) => "u-ok",
                            Some(ComponentStatus::DegradedPerformance) => "u-minor",
                            Some(ComponentStatus::UnderMaintenance) => "u-maint",
                            Some(ComponentStatus::PartialOutage) => "u-major",
                            Some(ComponentStatus::MajorOutage) => "u-critical",
                        },
                        title: match (d.basis_points(), d.worst) {
                            (Some(bp), Some(w)) => {
                                format!("{}: {}% up, worst: {}", d.date, percent(bp), w.label())
                            }
                            (None, Some(w)) => format!("{}: {}", d.date, w.label()),
                            _ => format!("{}: no data", d.date),
                        },
                    })
                    .collect()
            } else {
                Vec::new()
            },
        })
        .collect();
    let mut maintenance: Vec<IncidentView> =
        snap.active().map(|m| incident_view(clock, m)).collect();
    maintenance.extend(snap.upcoming().into_iter().map(|m| incident_view(clock, m)));
    StatusPage {
        assets: &ASSETS,
        name: &snap.page.name,
        banner_class,
        banner_symbol,
        banner: snap.status.description,
        updated_iso: clock.format(snap.updated_at),
        updated: clock.human(snap.updated_at),
        time_zone: clock.name(),
        components,
        active: snap.unresolved().map(|i| incident_view(clock, i)).collect(),
        maintenance,
        past: snap
            .incidents
            .iter()
            .filter(|i| i.resolved_at.is_some())
            .take(PAST)
            .map(|i| incident_view(clock, i))
            .collect(),
        emails,
        webhooks,
    }
}

/// `GET /status`.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(svc) = state.status() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "The status page is not running on this instance.\n",
        )
            .into_response();
    };
    let snap = svc.snapshot();
    let html = match view(&snap, svc.emails_enabled(), svc.webhooks_enabled()).render() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "status template failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be rendered.\n",
            )
                .into_response();
        }
    };
    let etag = format!("W/\"{:016x}\"", fnv1a(html.as_bytes()));
    let cache = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::VARY, "accept-encoding"),
    ];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache, [(header::ETAG, etag)]).into_response();
    }
    (
        cache,
        [
            (header::CONTENT_TYPE, HTML.to_string()),
            (header::ETAG, etag),
        ],
        html,
    )
        .into_response()
}

/// The subscription form's fields.
#[derive(Debug, Default, serde::Deserialize)]
pub struct SubscribeForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    component: String,
}

/// The webhook subscription form's fields.
#[derive(Debug, Default, serde::Deserialize)]
pub struct WebhookForm {
    #[serde(default)]
    endpoint: String,
    #[serde(default)]
    component: String,
}

/// `?token=…` of the links in subscription emails.
#[derive(Debug, Default, serde::Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn message(state: &AppState, status: StatusCode, title: &str, text: &str) -> Response {
    let name = state
        .status()
        .map_or_else(String::new, |s| s.snapshot().page.name.clone());
    let page = MessagePage {
        assets: &ASSETS,
        name: &name,
        title,
        message: text,
    };
    match page.render() {
        Ok(html) => (
            status,
            [
                (header::CONTENT_TYPE, HTML),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "status message template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be rendered.\n",
            )
                .into_response()
        }
    }
}

/// The page saying the status page does not run on this instance.
fn unavailable(state: &AppState) -> Response {
    message(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "The status page is not running on this instance.",
    )
}

/// The page saying a subscription form could not be read.
fn unreadable(state: &AppState) -> Response {
    message(
        state,
        StatusCode::BAD_REQUEST,
        "Not subscribed",
        "The form could not be read.",
    )
}

/// `POST /status/subscribe`: email double opt-in (a confirmation link is mailed).
pub async fn subscribe(
    State(state): State<AppState>,
    form: Result<axum::extract::Form<SubscribeForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(svc) = state.status().cloned() else {
        return unavailable(&state);
    };
    let Ok(axum::extract::Form(f)) = form else {
        return unreadable(&state);
    };
    let component = Some(f.component.as_str()).filter(|c| !c.is_empty());
    match svc
        .subscribe_email(&f.email, component, orinari_store::now_ms())
        .await
    {
        Ok(()) => message(
            &state,
            StatusCode::OK,
            "Check your email",
            "If the address is right, a confirmation link is on its way. Nothing is sent until you follow it.",
        ),
        Err(orinari_status::StatusError::Invalid { message: m, .. }) => message(
            &state,
            StatusCode::BAD_REQUEST,
            "Not subscribed",
            &capitalise(&format!("{m}.")),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "subscription failed");
            message(
                &state,
                StatusCode::BAD_GATEWAY,
                "Not subscribed",
                "The confirmation email could not be sent; try again later.",
            )
        }
    }
}

/// `POST /status/subscribe/webhook`: the no-JavaScript form for
/// `POST /api/v2/subscribers.json`; the answer shows the signing secret once.
pub async fn subscribe_webhook(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    form: Result<axum::extract::Form<WebhookForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(svc) = state.status().cloned() else {
        return unavailable(&state);
    };
    let Ok(axum::extract::Form(f)) = form else {
        return unreadable(&state);
    };
    let input = orinari_status::webhooks::WebhookInput {
        endpoint: f.endpoint,
        components: Some(f.component)
            .filter(|c| !c.is_empty())
            .into_iter()
            .collect(),
        secret: None,
    };
    let client = crate::http::client_ip(&state.edge().config().connections, &extensions, &headers);
    match svc
        .subscribe_webhook(input, client, orinari_store::now_ms())
        .await
    {
        Ok(c) => message(
            &state,
            StatusCode::OK,
            "Webhook subscribed",
            &format!(
                "Your endpoint answered the verification and will receive notifications. \
                 Signing secret (shown only now; check x-orinari-signature with it): {}. \
                 To unsubscribe, open {}",
                c.secret, c.unsubscribe_url
            ),
        ),
        Err(orinari_status::StatusError::Invalid { message: m, .. }) => message(
            &state,
            StatusCode::BAD_REQUEST,
            "Not subscribed",
            &capitalise(&format!("{m}.")),
        ),
        Err(orinari_status::StatusError::Limited { .. }) => message(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            "Not subscribed",
            "Too many subscription requests from here; try again later.",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "webhook subscription failed");
            message(
                &state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not subscribed",
                "The subscription could not be stored; try again later.",
            )
        }
    }
}

/// `GET /status/subscriptions/confirm?token=…`.
pub async fn confirm(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    token_action(&state, &q.token, true).await
}

/// `GET /status/subscriptions/unsubscribe?token=…`.
pub async fn unsubscribe(State(state): State<AppState>, Query(q): Query<TokenQuery>) -> Response {
    token_action(&state, &q.token, false).await
}

async fn token_action(state: &AppState, token: &str, confirm: bool) -> Response {
    let Some(svc) = state.status().cloned() else {
        return unavailable(state);
    };
    let now = orinari_store::now_ms();
    let done = if confirm {
        svc.confirm(token, now).await
    } else {
        svc.unsubscribe(token, now).await
    };
    match (done, confirm) {
        (Ok(true), true) => message(
            state,
            StatusCode::OK,
            "Subscribed",
            "You will get an email when an incident or maintenance concerns what you chose.",
        ),
        (Ok(true), false) => message(
            state,
            StatusCode::OK,
            "Unsubscribed",
            "You will get no more notifications from this status page.",
        ),
        (Ok(false), _) => message(
            state,
            StatusCode::NOT_FOUND,
            "Link not valid",
            "This link is unknown or was already used.",
        ),
        (Err(e), _) => {
            tracing::error!(error = %e, "subscription change failed");
            message(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Try again later",
                "The change could not be stored.",
            )
        }
    }
}
