//! Visitors' webhook subscriptions.
//!
//! A visitor gives a URL (and optionally the components it cares about and
//! its own signing secret). Before anything is stored, the URL passes the
//! SSRF checks of [`crate::outbound`] and receives a signed
//! `subscription.verify` event carrying a random `challenge`; the endpoint
//! must answer 2xx with the challenge in its body (as Slack and Zoom ask),
//! which proves that whoever runs it wants the notifications. Only then is
//! the subscription stored, active, and the visitor gets its id, the signing
//! secret (shown once) and an unsubscribe token.
//!
//! Notifications mirror Statuspage's webhook payloads (`meta`, `page` with
//! `status_indicator`/`status_description`, then `incident` or
//! `component_update` + `component`), with an `event` field naming what
//! happened, and are signed like every webhook here
//! (`x-orinari-signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`).
//!
//! Creation is rate-limited per client address (IPv6 by /64) and per
//! instance, and the number of active subscriptions is capped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use orinari_store::NewWebhook;
use serde_json::{Value, json};

use crate::outbound::{Outbound, Reply};
use crate::service::Snapshot;
use crate::{StatusError, StatusService, new_id};

/// Subscription attempts per client address per [`WINDOW_MS`].
pub const PER_CLIENT: u32 = 10;
/// Subscription attempts per instance per [`WINDOW_MS`].
pub const PER_INSTANCE: u32 = 100;
/// The rate-limit window: one hour.
pub const WINDOW_MS: i64 = 3_600_000;
/// Active webhook subscriptions at most.
pub const MAX_ACTIVE: i64 = 10_000;
/// Components one subscription may name.
const MAX_COMPONENTS: usize = 100;

/// `POST /api/v2/subscribers.json`.
#[derive(Debug, Clone, Default)]
pub struct WebhookInput {
    /// `endpoint`: where notifications go.
    pub endpoint: String,
    /// `components`: ids; empty for all.
    pub components: Vec<String>,
    /// `secret`: the signing secret to use; generated when absent.
    pub secret: Option<String>,
}

/// A subscription just made.
#[derive(Clone)]
pub struct WebhookCreated {
    /// Id.
    pub id: String,
    /// The endpoint.
    pub endpoint: String,
    /// Component ids; empty for all.
    pub components: Vec<String>,
    /// The signing secret (shown once).
    pub secret: String,
    /// The unsubscribe token.
    pub unsubscribe_token: String,
    /// The unsubscribe link.
    pub unsubscribe_url: String,
}

impl std::fmt::Debug for WebhookCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCreated")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("components", &self.components)
            .finish_non_exhaustive()
    }
}

/// Fixed-window counters of subscription attempts.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    windows: Mutex<(i64, u32, HashMap<IpAddr, u32>)>,
}

impl Attempts {
    /// Count one attempt by `client`; the seconds to wait when over a limit.
    fn take(&self, client: Option<IpAddr>, now: i64) -> Result<(), u64> {
        let Ok(mut w) = self.windows.lock() else {
            return Err(60);
        };
        let start = now - now.rem_euclid(WINDOW_MS);
        if w.0 != start {
            *w = (start, 0, HashMap::new());
        }
        let retry = u64::try_from((start + WINDOW_MS - now) / 1000)
            .unwrap_or(1)
            .max(1);
        if w.1 >= PER_INSTANCE {
            return Err(retry);
        }
        if let Some(ip) = client.map(client_key) {
            let n = w.2.entry(ip).or_insert(0);
            if *n >= PER_CLIENT {
                return Err(retry);
            }
            *n += 1;
        }
        w.1 += 1;
        Ok(())
    }
}

/// IPv6 clients are counted by their /64 (one host can own all of it).
fn client_key(ip: IpAddr) -> IpAddr {
    match crate::outbound::canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// `t=<unix s>,v1=<hex>` and the other headers of one delivery.
pub(crate) fn headers(
    secret: &str,
    event: &str,
    id: &str,
    body: &str,
) -> Vec<(&'static str, String)> {
    let t = orinari_store::now_ms() / 1000;
    vec![
        (
            "x-orinari-signature",
            crate::sign(secret.as_bytes(), t, body.as_bytes()),
        ),
        ("x-orinari-event", event.to_string()),
        ("x-orinari-subscription", id.to_string()),
    ]
}

/// The `page` object of notifications: Statuspage's webhook fields
/// (`id`, `status_indicator`, `status_description`) and ours (`name`, `url`…).
pub(crate) fn notice_page(snap: &Snapshot) -> Value {
    let mut p = crate::statuspage::page(snap);
    if let Value::Object(o) = &mut p {
        o.insert(
            "status_indicator".into(),
            json!(snap.status.indicator.as_str()),
        );
        o.insert("status_description".into(), json!(snap.status.description));
    }
    p
}

/// The unsubscribe link of a token.
pub(crate) fn unsubscribe_url(page_url: &str, token: &str) -> String {
    format!(
        "{}/subscriptions/unsubscribe?token={token}",
        page_url.trim_end_matches('/')
    )
}

/// A visitor's notification for `event`, with the components it concerns;
/// `None` for events that are not for visitors (alerts).
pub(crate) fn visitor_payload(event: &Value, unsubscribe: &str) -> Option<(Value, Vec<String>)> {
    let name = event["event"].as_str()?;
    let mut out = json!({
        "event": name,
        "meta": {"unsubscribe": unsubscribe, "documentation": "https://github.com/orinari/orinari#webhook-subscriptions"},
        "page": {
            "id": event["page"]["id"],
            "status_indicator": event["page"]["status_indicator"],
            "status_description": event["page"]["status_description"],
        },
    });
    let components = match name {
        "incident.created" | "incident.updated" | "maintenance.created" | "maintenance.updated" => {
            out["incident"] = event["incident"].clone();
            crate::notify::component_ids(&event["incident"]["components"])
        }
        "maintenance.reminder" => {
            out["incident"] = event["scheduled_maintenance"].clone();
            out["reminder"] = json!({"hours_before": event["hours_before"]});
            crate::notify::component_ids(&event["scheduled_maintenance"]["components"])
        }
        "component.status_changed" => {
            let c = &event["component"];
            out["component_update"] = json!({
                "created_at": c["updated_at"],
                "old_status": event["old_status"],
                "new_status": event["new_status"],
                "component_id": c["id"],
            });
            out["component"] = c.clone();
            c["id"]
                .as_str()
                .map(|i| vec![i.to_string()])
                .unwrap_or_default()
        }
        _ => return None,
    };
    Some((out, components))
}

fn valid_secret(s: &str) -> Result<(), StatusError> {
    let n = s.chars().count();
    if !(16..=200).contains(&n) || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err(StatusError::invalid(
            "secret",
            "must be 16 to 200 printable ASCII characters without spaces (or leave it out to get one)",
        ));
    }
    Ok(())
}

impl StatusService {
    /// Whether visitors may subscribe webhooks.
    pub fn webhooks_enabled(&self) -> bool {
        self.visitor_webhooks().is_some()
    }

    /// A visitor subscribes a webhook: checks every field, counts the
    /// attempt against the rate limits, verifies the endpoint (signed
    /// challenge, SSRF-safe), then stores the subscription, active.
    pub async fn subscribe_webhook(
        &self,
        input: WebhookInput,
        client: Option<IpAddr>,
        now: i64,
    ) -> Result<WebhookCreated, StatusError> {
        let Some(v) = self.visitor_webhooks() else {
            return Err(StatusError::invalid(
                "endpoint",
                "webhook subscriptions are not enabled on this page",
            ));
        };
        let endpoint = input.endpoint.trim().to_string();
        if endpoint.is_empty() {
            return Err(StatusError::invalid("endpoint", "must not be empty"));
        }
        Outbound::parse(&endpoint).map_err(|m| StatusError::invalid("endpoint", m))?;
        let snap = self.snapshot();
        if input.components.len() > MAX_COMPONENTS {
            return Err(StatusError::invalid(
                "components",
                format!("must name at most {MAX_COMPONENTS} components"),
            ));
        }
        let mut components: Vec<String> = Vec::new();
        for (i, c) in input.components.iter().enumerate() {
            if snap.component(c).is_none() {
                return Err(StatusError::invalid(
                    &format!("components[{i}]"),
                    format!("no component `{c}`; see /api/v2/components.json for the ids"),
                ));
            }
            if !components.contains(c) {
                components.push(c.clone());
            }
        }
        let secret = match input.secret {
            Some(s) => {
                valid_secret(&s)?;
                s
            }
            None => format!("whsec_{}{}{}", new_id(), new_id(), new_id()),
        };
        self.attempts()
            .take(client, now)
            .map_err(|retry_after_s| StatusError::Limited { retry_after_s })?;
        if self.store().webhook_count().await? >= MAX_ACTIVE {
            return Err(StatusError::Limited {
                retry_after_s: 3600,
            });
        }
        let checked = v
            .outbound
            .check(&endpoint)
            .await
            .map_err(|m| StatusError::invalid("endpoint", m))?;
        let id = new_id();
        let token = format!("{}{}{}", new_id(), new_id(), new_id());
        let unsubscribe = unsubscribe_url(&self.page().url, &token);
        let challenge = format!("{}{}", new_id(), new_id());
        let body = json!({
            "event": "subscription.verify",
            "challenge": challenge,
            "meta": {"unsubscribe": unsubscribe},
            "page": notice_page(&snap),
            "subscription": {"id": id, "components": components},
        })
        .to_string();
        let reply = v
            .outbound
            .post(
                &checked,
                &headers(&secret, "subscription.verify", &id, &body),
                &body,
            )
            .await
            .map_err(|m| StatusError::invalid("endpoint", format!("verification failed: {m}")))?;
        verified(&reply, &challenge)?;
        self.store()
            .subscribe_webhook(&NewWebhook {
                id: id.clone(),
                url: checked.url.to_string(),
                components: components.clone(),
                secret: secret.clone(),
                unsubscribe_token: token.clone(),
                at: now,
            })
            .await?;
        tracing::info!(subscription = %id, "webhook subscription verified");
        Ok(WebhookCreated {
            id,
            endpoint: checked.url.to_string(),
            components,
            secret,
            unsubscribe_token: token,
            unsubscribe_url: unsubscribe,
        })
    }
}

fn verified(reply: &Reply, challenge: &str) -> Result<(), StatusError> {
    if !(200..300).contains(&reply.status) {
        return Err(StatusError::invalid(
            "endpoint",
            format!(
                "verification failed: the endpoint answered {} (it must answer 2xx with the challenge in its body)",
                reply.status
            ),
        ));
    }
    let echoed = std::str::from_utf8(&reply.body).is_ok_and(|b| b.contains(challenge));
    if !echoed {
        return Err(StatusError::invalid(
            "endpoint",
            "verification failed: the response did not contain the `challenge` of the verification event",
        ));
    }
    Ok(())
}
