//! Notifications to webhook subscribers: every incident and maintenance
//! change is POSTed as JSON, signed with HMAC-SHA256 over
//! `<timestamp>.<body>` (header `x-orinari-signature: t=<unix s>,v1=<hex>`,
//! the scheme Stripe and others use, so receivers can reject replays).
//! Delivery runs in the service's own task from a bounded queue, with
//! retries; a full queue drops the oldest news rather than block a write.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use orinari_config::WebhookSettings;
use sha2::Sha256;
use tokio::sync::{mpsc, watch};

/// Queued notifications before new ones are dropped.
const QUEUE: usize = 256;
/// Attempts per delivery.
const ATTEMPTS: u32 = 3;
/// Time limit per attempt.
const TIMEOUT: Duration = Duration::from_secs(10);

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
    hooks: Arc<Vec<Webhook>>,
    tx: Option<mpsc::Sender<serde_json::Value>>,
    rx: Arc<Mutex<Option<mpsc::Receiver<serde_json::Value>>>>,
    http: reqwest::Client,
}

impl Notifier {
    /// Subscribers from config; secrets are read from their environment variables now.
    pub fn new(settings: &[WebhookSettings]) -> Self {
        let hooks = settings
            .iter()
            .map(|w| Webhook {
                url: w.url.clone(),
                secret: w
                    .secret_env
                    .as_ref()
                    .and_then(|v| std::env::var(v).ok())
                    .map(String::into_bytes),
            })
            .collect();
        Self::with_hooks(hooks)
    }

    /// Subscribers given directly.
    pub fn with_hooks(hooks: Vec<Webhook>) -> Self {
        let (tx, rx) = if hooks.is_empty() {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(QUEUE);
            (Some(tx), Some(rx))
        };
        Self {
            hooks: Arc::new(hooks),
            tx,
            rx: Arc::new(Mutex::new(rx)),
            http: reqwest::Client::builder()
                .timeout(TIMEOUT)
                .build()
                .unwrap_or_default(),
        }
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
            for h in self.hooks.iter() {
                self.post(h, &body).await;
            }
        }
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
