//! Probes: one attempt against a target (HTTP(S) with status, latency and
//! body checks; a TCP connect; the store answering), and the thresholds that
//! turn attempts into a component's observed status, so one blip never flips
//! a component.

use std::time::{Duration, Instant};

use orinari_store::Store;
use tokio::net::TcpStream;

use crate::model::ComponentStatus;

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `GET url`; passes on `expect_status` (or any 2xx/3xx) and, when set,
    /// when the body contains `keyword`.
    Http {
        /// `http://` or `https://` URL.
        url: String,
        /// The status code required, if one is.
        expect_status: Option<u16>,
        /// A string the body must contain.
        keyword: Option<String>,
        /// A dotted path into the JSON body and the value it must have.
        json: Option<(String, String)>,
    },
    /// The TLS certificate at `host:port` is valid for longer than `warn`
    /// (degraded within it; down once expired or when no handshake succeeds).
    Tls {
        /// Host name (also sent as SNI).
        host: String,
        /// Port.
        port: u16,
        /// How long before expiry the component shows degraded.
        warn: Duration,
    },
    /// A TCP connection to `host:port` opens.
    Tcp {
        /// `host:port`.
        addr: String,
    },
    /// The instance's own store answers a query.
    Storage,
}

impl Target {
    /// The same HTTP target with a JSON condition (other targets unchanged).
    pub fn with_json(mut self, condition: Option<(String, String)>) -> Self {
        if let Self::Http { json, .. } = &mut self {
            *json = condition;
        }
        self
    }

    /// A target from a check's `url`: `http(s)://…`, `tcp://host:port`, or
    /// `builtin:storage`. Errors say what is accepted.
    pub fn parse(
        url: &str,
        expect_status: Option<u16>,
        keyword: Option<String>,
    ) -> Result<Self, String> {
        if url.starts_with("http://") || url.starts_with("https://") {
            reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
            return Ok(Self::Http {
                url: url.into(),
                expect_status,
                keyword,
                json: None,
            });
        }
        if let Some(addr) = url.strip_prefix("tcp://") {
            return match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(Self::Tcp { addr: addr.into() })
                }
                _ => Err(format!("`{url}` must be tcp://HOST:PORT")),
            };
        }
        if let Some(addr) = url.strip_prefix("tls://") {
            return match addr.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
                    Ok(port) => Ok(Self::Tls {
                        host: host.into(),
                        port,
                        warn: Duration::from_secs(14 * 86_400),
                    }),
                    Err(_) => Err(format!("`{url}` must be tls://HOST:PORT")),
                },
                _ => Err(format!("`{url}` must be tls://HOST:PORT")),
            };
        }
        if url == "builtin:storage" {
            return Ok(Self::Storage);
        }
        Err(format!(
            "`{url}` must be an http:// or https:// URL, tcp://HOST:PORT, tls://HOST:PORT, or builtin:storage"
        ))
    }
}

/// One attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Passed its conditions.
    pub ok: bool,
    /// How long it took.
    pub latency: Duration,
    /// Why it failed (for logs and the admin API; never a secret).
    pub error: Option<String>,
    /// Passed, but with a warning (a certificate near its expiry).
    pub degraded: bool,
}

/// Runs attempts; holds the pooled HTTP client.
#[derive(Debug, Clone)]
pub struct Prober {
    http: reqwest::Client,
    store: Option<Store>,
}

impl Prober {
    /// A prober; `store` serves `builtin:storage`.
    pub fn new(store: Option<Store>) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("orinari-probe/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .unwrap_or_default();
        Self { http, store }
    }

    /// One attempt under `timeout`.
    pub async fn attempt(&self, target: &Target, timeout: Duration) -> Attempt {
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, self.run(target)).await;
        let latency = started.elapsed();
        let (error, degraded) = match result {
            Ok(Ok(degraded)) => (None, degraded),
            Ok(Err(e)) => (Some(e), false),
            Err(_) => (
                Some(format!("timed out after {} ms", timeout.as_millis())),
                false,
            ),
        };
        Attempt {
            ok: error.is_none(),
            latency,
            error,
            degraded,
        }
    }

    /// `Ok(true)` passed with a warning.
    async fn run(&self, target: &Target) -> Result<bool, String> {
        match target {
            Target::Http {
                url,
                expect_status,
                keyword,
                json,
            } => {
                let resp = self
                    .http
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| format!("request failed: {}", without_url(&e)))?;
                let status = resp.status().as_u16();
                let status_ok = match expect_status {
                    Some(want) => status == *want,
                    None => (200..400).contains(&status),
                };
                if !status_ok {
                    return Err(format!("HTTP status {status}"));
                }
                if keyword.is_some() || json.is_some() {
                    let body = resp
                        .text()
                        .await
                        .map_err(|e| format!("reading the body failed: {}", without_url(&e)))?;
                    if let Some(word) = keyword
                        && !body.contains(word.as_str())
                    {
                        return Err("the body does not contain the keyword".into());
                    }
                    if let Some((path, want)) = json {
                        json_condition(&body, path, want)?;
                    }
                }
                Ok(false)
            }
            Target::Tls { host, port, warn } => {
                let expires = crate::tls::expiry(host, *port).await?;
                let now = orinari_store::now_ms() / 1000;
                if expires <= now {
                    return Err("the certificate has expired".into());
                }
                let warn = i64::try_from(warn.as_secs()).unwrap_or(i64::MAX);
                Ok(expires - now < warn)
            }
            Target::Tcp { addr } => TcpStream::connect(addr.as_str())
                .await
                .map(|_| false)
                .map_err(|e| format!("connect failed: {e}")),
            Target::Storage => match &self.store {
                Some(s) => s.ping().await.map(|()| false).map_err(|e| e.to_string()),
                None => Err("no store".into()),
            },
        }
    }
}

/// The JSON body's value at `path` (dotted; numbers index arrays) equals
/// `want` (a string value compared as is, anything else as JSON text).
pub fn json_condition(body: &str, path: &str, want: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|_| "the body is not JSON".to_string())?;
    let mut at = &v;
    for seg in path.split('.') {
        let next = match at {
            serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            serde_json::Value::Object(o) => o.get(seg),
            _ => None,
        };
        at = next.ok_or_else(|| format!("`{path}` is not in the body"))?;
    }
    let got = match at {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if got == want {
        Ok(())
    } else {
        let shown: String = got.chars().take(80).collect();
        Err(format!("`{path}` is `{shown}`, expected `{want}`"))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "(url)");
    }
    s
}

/// Thresholds of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive failures before the component is down.
    pub failures: u32,
    /// Consecutive passes before it is up again.
    pub successes: u32,
    /// A pass slower than this counts as degraded.
    pub degraded_after: Option<Duration>,
}

/// Consecutive outcomes of one check → an observed status.
#[derive(Debug, Clone)]
pub struct Tracker {
    limits: Thresholds,
    fails: u32,
    passes: u32,
    state: Option<ComponentStatus>,
}

impl Tracker {
    /// A tracker with no observation yet.
    pub fn new(limits: Thresholds) -> Self {
        Self {
            limits,
            fails: 0,
            passes: 0,
            state: None,
        }
    }

    /// The current observed status (none before the first decision).
    pub fn state(&self) -> Option<ComponentStatus> {
        self.state
    }

    /// What the component would become after this attempt: `Some(new)` when
    /// it changes. The caller commits it with [`Tracker::commit`] (after the
    /// self-connectivity check for a change to down).
    pub fn propose(&mut self, a: &Attempt) -> Option<ComponentStatus> {
        if a.ok {
            self.passes = self.passes.saturating_add(1);
            self.fails = 0;
        } else {
            self.fails = self.fails.saturating_add(1);
            self.passes = 0;
        }
        let slow = a.degraded || self.limits.degraded_after.is_some_and(|d| a.latency > d);
        let want = if !a.ok {
            (self.fails >= self.limits.failures).then_some(ComponentStatus::MajorOutage)
        } else if self.state == Some(ComponentStatus::MajorOutage)
            && self.passes < self.limits.successes
        {
            None
        } else if slow {
            Some(ComponentStatus::DegradedPerformance)
        } else {
            Some(ComponentStatus::Operational)
        };
        want.filter(|w| Some(*w) != self.state)
    }

    /// Accept a proposed status.
    pub fn commit(&mut self, s: ComponentStatus) {
        self.state = Some(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(ok: bool, ms: u64) -> Attempt {
        Attempt {
            ok,
            latency: Duration::from_millis(ms),
            error: None,
            degraded: false,
        }
    }

    fn step(t: &mut Tracker, ok: bool, ms: u64) -> Option<ComponentStatus> {
        let p = t.propose(&attempt(ok, ms));
        if let Some(s) = p {
            t.commit(s);
        }
        p
    }

    #[test]
    fn thresholds_stop_one_blip_from_flipping_a_component() {
        let mut t = Tracker::new(Thresholds {
            failures: 3,
            successes: 2,
            degraded_after: Some(Duration::from_millis(500)),
        });
        use ComponentStatus as C;
        assert_eq!(step(&mut t, true, 10), Some(C::Operational));
        assert_eq!(step(&mut t, false, 10), None);
        assert_eq!(step(&mut t, false, 10), None);
        assert_eq!(step(&mut t, true, 10), None, "a blip resets the count");
        assert_eq!(step(&mut t, false, 10), None);
        assert_eq!(step(&mut t, false, 10), None);
        assert_eq!(step(&mut t, false, 10), Some(C::MajorOutage));
        assert_eq!(step(&mut t, true, 10), None, "one pass is not recovery");
        assert_eq!(step(&mut t, true, 900), Some(C::DegradedPerformance));
        assert_eq!(step(&mut t, true, 10), Some(C::Operational));
        assert_eq!(t.state(), Some(C::Operational));
    }

    #[test]
    fn json_conditions() {
        let body = r#"{"status": "ok", "checks": [{"up": true}, {"up": false}], "n": 3}"#;
        assert!(json_condition(body, "status", "ok").is_ok());
        assert!(json_condition(body, "checks.0.up", "true").is_ok());
        assert!(json_condition(body, "n", "3").is_ok());
        assert_eq!(
            json_condition(body, "checks.1.up", "true").unwrap_err(),
            "`checks.1.up` is `false`, expected `true`"
        );
        assert!(
            json_condition(body, "checks.5.up", "true")
                .unwrap_err()
                .contains("not in the body")
        );
        assert_eq!(
            json_condition("<html>", "status", "ok").unwrap_err(),
            "the body is not JSON"
        );
    }

    #[test]
    fn targets_parse_with_clear_errors() {
        assert!(matches!(
            Target::parse("tcp://127.0.0.1:5432", None, None),
            Ok(Target::Tcp { .. })
        ));
        assert!(
            Target::parse("tcp://nope", None, None)
                .unwrap_err()
                .contains("tcp://HOST:PORT")
        );
        assert!(
            Target::parse("ftp://x", None, None)
                .unwrap_err()
                .contains("http://")
        );
        assert_eq!(
            Target::parse("builtin:storage", None, None),
            Ok(Target::Storage)
        );
    }
}
