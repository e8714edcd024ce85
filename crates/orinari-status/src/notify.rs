//! Notifications to webhook subscribers: every incident and maintenance
//! change is POSTed as JSON, signed with HMAC-SHA256 over
//! `<timestamp>.<body>` (header `x-orinari-signature: t=<unix s>,v1=<hex>`,
//! the scheme Stripe and others use, so receivers can reject replays).
//! Delivery runs in the service's own task from a bounded queue, with
//! retries; a full queue drops the oldest news rather than block a write.
//!
//! Visitors' webhook subscriptions (see [`crate::webhooks`]) get the same
//! news in Statuspage's webhook shape, through the SSRF-safe client of
//! [`crate::outbound`], a few at a time; each notification is retried with
//! back-off, and a subscription whose notifications keep failing
//! (`[status] webhook_max_failures` in a row) is disabled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use orinari_config::{SmtpSettings, StatusSettings};
use orinari_store::{Store, WebhookRow};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{mpsc, watch};

/// Queued notifications before new ones are dropped.
const QUEUE: usize = 256;
/// Attempts per delivery.
const ATTEMPTS: u32 = 3;
/// Time limit per attempt.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Visitor webhooks notified at once.
const CONCURRENT: usize = 8;

/// What delivering to visitors' webhooks needs.
#[derive(Clone, Debug)]
pub(crate) struct Visitors {
    pub(crate) store: Store,
    pub(crate) outbound: crate::outbound::Outbound,
    pub(crate) page_url: String,
    pub(crate) max_failures: i64,
    /// First retry after this; each next one waits one more step.
    pub(crate) backoff: Duration,
}

/// One subscriber.
#[derive(Clone)]
pub struct Webhook {
    /// Where to POST.
    pub url: String,
    /// Signing secret (from the environment), if any.
    pub secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .finish()
    }
}

/// The operators' subscribers: webhooks (`[[status.webhooks]]`) and the
/// addresses alerts are emailed to (`alert_emails`).
#[derive(Clone, Debug, Default)]
pub struct Operators {
    /// Webhooks, each sent every notification.
    pub hooks: Vec<Webhook>,
    /// Emailed when an alert fires or resolves.
    pub emails: Vec<String>,
}

impl Operators {
    /// From `[status]`; each webhook's secret is read from its environment
    /// variable now.
    pub fn of(settings: &StatusSettings) -> Self {
        Self {
            hooks: settings
                .webhooks
                .iter()
                .map(|w| Webhook {
                    url: w.url.clone(),
                    secret: w
                        .secret_env
                        .as_ref()
                        .and_then(|v| std::env::var(v).ok())
                        .map(String::into_bytes),
                })
                .collect(),
            emails: settings.alert_emails.clone(),
        }
    }
}

/// `t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], unix_s: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(unix_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={unix_s},v1={hex}")
}

/// The notification queue and its subscribers.
#[derive(Clone, Debug)]
pub struct Notifier {
    /// The operators' subscribers (`[[status.webhooks]]`, `alert_emails`);
    /// a reload replaces them, and the next delivery goes to the new ones.
    operators: Arc<ArcSwap<Operators>>,
    email: Option<(SmtpSettings, Store, String)>,
    visitors: Option<Visitors>,
    tx: Option<mpsc::Sender<serde_json::Value>>,
    rx: Arc<Mutex<Option<mpsc::Receiver<serde_json::Value>>>>,
    http: reqwest::Client,
}

impl Notifier {
    /// Subscribers from config (secrets are read from their environment
    /// variables now), and email subscribers from `store` when SMTP is set.
    /// The queue always exists: a reload may add webhooks to a page that
    /// had none.
    pub fn new(settings: &StatusSettings, store: &Store) -> Self {
        let v = &settings.visitor_webhooks;
        let mut n = Self::with_hooks(Vec::new(), true);
        n.set_operators(Operators::of(settings));
        if v.enabled {
            n.visitors = Some(Visitors {
                store: store.clone(),
                outbound: crate::outbound::Outbound {
                    allow: v.allow.clone(),
                    ..crate::outbound::Outbound::default()
                },
                page_url: settings.page_url.clone(),
                max_failures: i64::from(v.max_failures),
                backoff: Duration::from_millis(500),
            });
        }
        n.email = settings
            .smtp
            .clone()
            .map(|s| (s, store.clone(), settings.page_url.clone()));
        n
    }

    /// The SMTP relay and sender, when email is enabled.
    pub fn smtp(&self) -> Option<&SmtpSettings> {
        self.email.as_ref().map(|(s, _, _)| s)
    }

    /// Subscribers given directly (`queue` forces a queue without webhooks).
    pub fn with_hooks(hooks: Vec<Webhook>, queue: bool) -> Self {
        let (tx, rx) = if hooks.is_empty() && !queue {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(QUEUE);
            (Some(tx), Some(rx))
        };
        Self {
            operators: Arc::new(ArcSwap::from_pointee(Operators {
                hooks,
                emails: Vec::new(),
            })),
            email: None,
            visitors: None,
            tx,
            rx: Arc::new(Mutex::new(rx)),
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Replace the operators' subscribers (a configuration reload); a
    /// delivery under way finishes with the ones it started with.
    pub fn set_operators(&self, operators: Operators) {
        self.operators.store(Arc::new(operators));
    }

    /// The operators' webhooks now.
    pub fn hooks(&self) -> Vec<Webhook> {
        self.operators.load().hooks.clone()
    }

    /// Visitors' webhook subscriptions, when enabled.
    pub(crate) fn visitors(&self) -> Option<&Visitors> {
        self.visitors.as_ref()
    }

    /// Queue a notification (dropped, with a warning, when the queue is full).
    pub fn notify(&self, event: serde_json::Value) {
        if let Some(tx) = &self.tx
            && tx.try_send(event).is_err()
        {
            tracing::warn!("notification queue full: a notification was dropped");
        }
    }

    /// The queue's receiving end, once (the delivering task takes it).
    pub fn take_queue(&self) -> Option<mpsc::Receiver<serde_json::Value>> {
        self.rx.lock().ok().and_then(|mut r| r.take())
    }

    /// Deliver queued notifications until `stop`.
    pub async fn deliver(
        &self,
        mut queue: mpsc::Receiver<serde_json::Value>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let event = tokio::select! {
                e = queue.recv() => match e { Some(e) => e, None => return },
                _ = stop.wait_for(|s| *s) => return,
            };
            let body = event.to_string();
            let operators = self.operators.load_full();
            for h in &operators.hooks {
                self.post(h, &body).await;
            }
            self.mail(&event).await;
            self.notify_visitors(&event).await;
        }
    }

    /// Email one notification to every confirmed subscriber of the
    /// components it concerns (all subscribers when it names none).
    async fn mail(&self, event: &Value) {
        let Some((smtp, store, page_url)) = &self.email else {
            return;
        };
        if let Some(state) = event["event"]
            .as_str()
            .and_then(|e| e.strip_prefix("alert."))
        {
            // Alerts are for operators, never for public subscribers.
            let a = &event["alert"];
            let subject = format!(
                "[{}] Alert {state}: {}",
                event["page"]["name"].as_str().unwrap_or("Status"),
                a["name"].as_str().unwrap_or("")
            );
            let body = format!(
                "{}\n\nStatus page: {page_url}\n",
                serde_json::to_string_pretty(a).unwrap_or_default()
            );
            let operators = self.operators.load_full();
            for to in &operators.emails {
                let mail = crate::smtp::Mail {
                    from: &smtp.from,
                    to,
                    subject: &subject,
                    body: &body,
                };
                if let Err(e) = crate::smtp::send(&smtp.relay, &mail, TIMEOUT).await {
                    tracing::warn!(error = %e, "alert email not sent");
                }
            }
            return;
        }
        let Some((subject, text, components)) = email_for(event) else {
            return;
        };
        let subscribers = match store.subscribers().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list email subscribers");
                return;
            }
        };
        for s in subscribers {
            let wanted = s.components.is_empty()
                || components.is_empty()
                || s.components.iter().any(|c| components.contains(c));
            if !wanted {
                continue;
            }
            let body = format!(
                "{text}\n\nStatus page: {page_url}\nUnsubscribe: {page_url}/subscriptions/unsubscribe?token={}\n",
                s.unsubscribe_token
            );
            let mail = crate::smtp::Mail {
                from: &smtp.from,
                to: &s.email,
                subject: &subject,
                body: &body,
            };
            if let Err(e) = crate::smtp::send(&smtp.relay, &mail, TIMEOUT).await {
                tracing::warn!(error = %e, "notification email not sent");
            }
        }
    }

    /// Send one notification to every visitor webhook it concerns, a few at
    /// a time, and record each outcome.
    pub(crate) async fn notify_visitors(&self, event: &Value) {
        let Some(v) = &self.visitors else { return };
        if crate::webhooks::visitor_payload(event, "").is_none() {
            return;
        }
        let subscribers = match v.store.webhooks().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list webhook subscribers");
                return;
            }
        };
        let mut running = tokio::task::JoinSet::new();
        for s in subscribers {
            let unsubscribe = crate::webhooks::unsubscribe_url(&v.page_url, &s.unsubscribe_token);
            let Some((payload, concerns)) = crate::webhooks::visitor_payload(event, &unsubscribe)
            else {
                continue;
            };
            let wanted = s.components.is_empty()
                || concerns.is_empty()
                || s.components.iter().any(|c| concerns.contains(c));
            if !wanted {
                continue;
            }
            while running.len() >= CONCURRENT {
                running.join_next().await;
            }
            let v = v.clone();
            running.spawn(async move { deliver_visitor(&v, &s, &payload).await });
        }
        while running.join_next().await.is_some() {}
    }

    /// POST one notification to one subscriber, retrying with back-off.
    pub async fn post(&self, hook: &Webhook, body: &str) -> bool {
        for attempt in 1..=ATTEMPTS {
            let mut req = self
                .http
                .post(&hook.url)
                .header("content-type", "application/json")
                .body(body.to_string());
            if let Some(secret) = &hook.secret {
                let t = orinari_store::now_ms() / 1000;
                req = req.header("x-orinari-signature", sign(secret, t, body.as_bytes()));
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => {
                    tracing::warn!(url = %hook.url, status = r.status().as_u16(), attempt, "webhook refused")
                }
                Err(e) => {
                    tracing::warn!(url = %hook.url, error = %e.without_url(), attempt, "webhook failed")
                }
            }
            tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
        }
        false
    }
}

/// The `id`s in an event's component list (an incident's or a
/// maintenance's `components`); empty when there is none.
pub(crate) fn component_ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Subject, text and the component ids an event concerns.
fn email_for(event: &Value) -> Option<(String, String, Vec<String>)> {
    let page = event["page"]["name"].as_str().unwrap_or("Status");
    let words = |s: &str| s.replace('_', " ");
    match event["event"].as_str()? {
        "incident.created" | "incident.updated" | "maintenance.created" | "maintenance.updated" => {
            let i = &event["incident"];
            let name = i["name"].as_str()?;
            let status = words(i["status"].as_str()?);
            let latest = i["incident_updates"][0]["body"].as_str().unwrap_or("");
            let mut text = format!("{name}\nStatus: {status}\n\n{latest}");
            if let (Some(a), Some(b)) = (i["scheduled_for"].as_str(), i["scheduled_until"].as_str())
            {
                text.push_str(&format!("\n\nWindow: {a} to {b}"));
            }
            Some((
                format!("[{page}] {name}: {status}"),
                text,
                component_ids(&i["components"]),
            ))
        }
        "maintenance.reminder" => {
            let m = &event["scheduled_maintenance"];
            let name = m["name"].as_str()?;
            let hours = event["hours_before"].as_i64()?;
            let unit = if hours == 1 { "hour" } else { "hours" };
            let text = format!(
                "Scheduled maintenance \"{name}\" starts in {hours} {unit}.\nWindow: {} to {}",
                m["scheduled_for"].as_str().unwrap_or(""),
                m["scheduled_until"].as_str().unwrap_or("")
            );
            Some((
                format!("[{page}] Maintenance in {hours} {unit}: {name}"),
                text,
                component_ids(&m["components"]),
            ))
        }
        "component.status_changed" => {
            let c = &event["component"];
            let name = c["name"].as_str()?;
            let new = words(event["new_status"].as_str()?);
            Some((
                format!("[{page}] {name}: {new}"),
                format!("{name} is now {new}."),
                c["id"]
                    .as_str()
                    .map(|i| vec![i.to_string()])
                    .unwrap_or_default(),
            ))
        }
        _ => None,
    }
}

/// One notification to one visitor's webhook: the URL is checked (and its
/// host resolved) again for every attempt, then the outcome is recorded.
async fn deliver_visitor(v: &Visitors, s: &WebhookRow, payload: &Value) {
    let body = payload.to_string();
    let event = payload["event"].as_str().unwrap_or("notification");
    let mut ok = false;
    for attempt in 1..=ATTEMPTS {
        let sent = match v.outbound.check(&s.url).await {
            Ok(to) => {
                let headers = crate::webhooks::headers(&s.secret, event, &s.id, &body);
                v.outbound.post(&to, &headers, &body).await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(r) if (200..300).contains(&r.status) => {
                ok = true;
                break;
            }
            Ok(r) => {
                tracing::warn!(subscription = %s.id, status = r.status, attempt, "webhook subscriber refused")
            }
            Err(e) => {
                tracing::warn!(subscription = %s.id, error = %e, attempt, "webhook subscriber failed")
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(v.backoff * attempt).await;
        }
    }
    if ok && s.failures == 0 {
        return;
    }
    match v
        .store
        .webhook_delivered(&s.id, ok, orinari_store::now_ms(), v.max_failures)
        .await
    {
        Ok(true) => {
            tracing::warn!(subscription = %s.id, failures = v.max_failures, "webhook subscription disabled after repeated failures")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(subscription = %s.id, error = %e, "cannot record a webhook delivery")
        }
    }
}
