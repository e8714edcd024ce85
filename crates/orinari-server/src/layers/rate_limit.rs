//! Rate limits and the admission queue for `/v1/*`, after [`api_auth`]
//! resolved the caller:
//!
//! 1. a chat request's body is read (within `max_body_bytes` and the body
//!    timeout) to learn its model and a token estimate (body bytes / 4 plus
//!    `max_tokens`, or the configured default);
//! 2. a key limited to some models gets 403 for another;
//! 3. the limiter checks the request rate and reserves the estimate: 429
//!    with `Retry-After` when refused;
//! 4. the request waits for a slot in its model's fair queue: 503 with
//!    `Retry-After` when the queue is full or the wait times out;
//! 5. the answer runs holding the slot until its body (a stream included)
//!    has ended, then the reservation is settled with the tokens the
//!    handler recorded in [`Spent`].
//!
//! Every `/v1/*` response carries the `x-ratelimit-*` headers.
//!
//! [`api_auth`]: super::api_auth

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orinari_api::{ApiError, ErrorType};
use orinari_limits::queue::{Permit, Refused};
use orinari_limits::{Decision, LimitKind, Policy, Source, reset_text, retry_after_secs};

use crate::AppState;
use crate::edge::Caller;

use crate::error::{ErrorMessage, HttpError};

/// Tokens a request really used, recorded by the handler when it knows
/// (prompt + completion); settles the reservation when the answer ends.
#[derive(Debug, Clone, Default)]
pub struct Spent(Arc<AtomicU64>);

impl Spent {
    /// Record the tokens used.
    pub fn record(&self, prompt: u32, completion: u32) {
        let total = u64::from(prompt) + u64::from(completion);
        // Stored +1 so that 0 means "not recorded".
        self.0.store(total + 1, Ordering::Relaxed);
    }

    fn get(&self) -> Option<u32> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(u32::try_from(n - 1).unwrap_or(u32::MAX)),
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct Peek {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
}

/// The middleware behind the layer built in `stack.rs`.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        // `api_auth` always runs first; without a caller there is nothing to limit.
        return next.run(req).await;
    };
    // One configuration for the whole request, even across a reload.
    let live = state.live();
    let edge = &live.edge;
    let chat = req.method() == Method::POST && req.uri().path() == "/v1/chat/completions";
    let (req, model, estimate, served) = if chat {
        let (parts, body) = req.into_parts();
        let bytes = match read_body(body, state.max_body_bytes()).await {
            Ok(b) => b,
            Err(e) => return HttpError(e).into_response(),
        };
        let peek: Peek = serde_json::from_slice(&bytes).unwrap_or_default();
        // No answer can be longer than the model's window: a larger
        // max_tokens is the handler's 400, not a token-limit 429.
        let served = peek.model.as_deref().and_then(|m| live.model(m));
        let window = served.map_or(u32::MAX, |m| m.backend.info().context_window);
        let completion = peek
            .max_completion_tokens
            .or(peek.max_tokens)
            .map_or(edge.config().limits.default_completion_estimate, |n| {
                u32::try_from(n).unwrap_or(u32::MAX)
            })
            .min(window);
        let prompt = u32::try_from(bytes.len() / 4).unwrap_or(u32::MAX);
        let estimate = prompt.saturating_add(completion);
        (
            Request::from_parts(parts, Body::from(bytes)),
            peek.model,
            estimate,
            served.is_some(),
        )
    } else {
        (req, None, 0, false)
    };
    if let Some(m) = &model
        && !caller.may_use(m)
    {
        let e = ApiError::forbidden(
            format!("This API key may not use the model `{m}`."),
            "model_not_allowed",
        )
        .with_param("model");
        return HttpError(e).into_response();
    }

    let limiter = edge.limiter();
    let decision = limiter
        .check(&caller.subject, caller.policy, estimate)
        .await;
    if decision.source == Source::Local && !limiter.healthy() {
        state.metrics().limits.local_fallbacks.inc();
    }
    if let Some(kind) = decision.refused {
        state.metrics().limits.rejected(kind.as_str());
        let mut res = HttpError(refusal(kind, &decision, estimate, caller.policy)).into_response();
        set_headers(res.headers_mut(), &decision);
        return res;
    }

    if let Some(m) = model.as_deref().filter(|_| served) {
        state
            .metrics()
            .analytics
            .model_request(m, orinari_store::now_ms());
    }
    let permit = match model.as_deref().and_then(|m| edge.queue(m)) {
        Some(queue) => {
            state
                .metrics()
                .limits
                .queue_depth
                .set(edge.queue_depth() as i64 + 1);
            let acquired = queue.acquire(&caller.ticket()).await;
            state
                .metrics()
                .limits
                .queue_depth
                .set(edge.queue_depth() as i64);
            match acquired {
                Ok(p) => Some(p),
                Err(refused) => {
                    limiter
                        .settle(&caller.subject, caller.policy, estimate, 0)
                        .await;
                    let kind = match refused {
                        Refused::Full => "queue_full",
                        Refused::Timeout => "queue_timeout",
                    };
                    state.metrics().limits.rejected(kind);
                    let mut e = ApiError::overloaded(
                        match refused {
                            Refused::Full => {
                                "The server is at capacity and its queue is full; retry shortly."
                            }
                            Refused::Timeout => {
                                "The request waited too long for a free slot; retry shortly."
                            }
                        },
                        1,
                    );
                    e.code = Some(kind);
                    let mut res = HttpError(e).into_response();
                    set_headers(res.headers_mut(), &decision);
                    return res;
                }
            }
        }
        None => None,
    };

    let spent = Spent::default();
    let mut req = req;
    req.extensions_mut().insert(spent.clone());
    let mut res = next.run(req).await;
    set_headers(res.headers_mut(), &decision);
    if estimate == 0 && permit.is_none() {
        return res;
    }
    let failed = !res.status().is_success();
    let (parts, body) = res.into_parts();
    let finish = Finish {
        state: state.clone(),
        caller,
        estimate,
        spent,
        failed,
        _permit: permit,
    };
    Response::from_parts(
        parts,
        Body::new(Guarded {
            inner: body,
            _finish: finish,
        }),
    )
}

/// The no-JS chat form (`POST /`) runs the model too, so it meets the same
/// caller resolution and limits as `/v1` (per client IP when keys are
/// optional); other page requests pass through.
pub async fn limit_form_posts(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    // A page without script sends its API key as the form field `api_key`
    // (the page has no other place to keep it); it counts as the bearer
    // token, unless the request carries one of its own.
    let (mut parts, body) = req.into_parts();
    let bytes = match read_body(body, state.max_body_bytes()).await {
        Ok(b) => b,
        Err(e) => return HttpError(e).into_response(),
    };
    if !parts.headers.contains_key(header::AUTHORIZATION)
        && let Some(key) = form_field(&bytes, "api_key").filter(|k| !k.trim().is_empty())
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
    {
        parts.headers.insert(header::AUTHORIZATION, value);
    }
    let mut req = Request::from_parts(parts, Body::from(bytes.clone()));
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let res = match super::api_auth::caller(&state, peer, req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert::<Caller>(caller);
            limit(State(state.clone()), req, next).await
        }
        Err(res) => res,
    };
    as_page(&state, &bytes, res)
}

/// The handler answers with a page; a refusal by the edge (an error in the
/// OpenAI envelope, which carries its message as [`ErrorMessage`]) becomes
/// the same page with the reason, keeping the refusal's status and headers
/// (`Retry-After`, `x-ratelimit-*`).
fn as_page(state: &AppState, form: &[u8], res: Response) -> Response {
    let (mut parts, body) = res.into_parts();
    let Some(ErrorMessage(message)) = parts.extensions.remove::<ErrorMessage>() else {
        return Response::from_parts(parts, body);
    };
    let mut page = crate::pages::chat::refused(state, form, parts.status, &message);
    for (name, value) in &parts.headers {
        let keep = name == header::RETRY_AFTER
            || name == header::WWW_AUTHENTICATE
            || name.as_str().starts_with("x-ratelimit-");
        if keep {
            page.headers_mut().insert(name.clone(), value.clone());
        }
    }
    page
}

/// The first value of `name` in a URL-encoded form body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::body_too_large(limit)
        } else {
            ApiError {
                status: 408,
                message: "The request body did not arrive in time.".into(),
                kind: ErrorType::InvalidRequestError,
                param: None,
                code: Some("request_timeout"),
                retry_after: None,
            }
        }
    })
}

fn refusal(kind: LimitKind, d: &Decision, estimate: u32, policy: Policy) -> ApiError {
    let wait = retry_after_secs(d.retry_after);
    match kind {
        LimitKind::Requests => ApiError::rate_limited(
            format!(
                "Rate limit reached: {} requests per minute. Retry after {wait} s.",
                policy.requests_per_minute
            ),
            "rate_limit_exceeded",
            wait,
        ),
        LimitKind::Tokens if estimate > policy.tokens_per_minute => ApiError::rate_limited(
            format!(
                "This request needs about {estimate} tokens, more than the limit of {} tokens per minute; lower max_tokens or shorten the messages.",
                policy.tokens_per_minute
            ),
            "tokens_exceeded",
            wait,
        ),
        LimitKind::Tokens => ApiError::rate_limited(
            format!(
                "Token limit reached: {} tokens per minute. Retry after {wait} s.",
                policy.tokens_per_minute
            ),
            "tokens_exceeded",
            wait,
        ),
    }
}

fn set_headers(h: &mut HeaderMap, d: &Decision) {
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    put("x-ratelimit-limit-requests", d.requests.limit.to_string());
    put(
        "x-ratelimit-remaining-requests",
        d.requests.remaining.to_string(),
    );
    put("x-ratelimit-reset-requests", reset_text(d.requests.reset));
    put("x-ratelimit-limit-tokens", d.tokens.limit.to_string());
    put(
        "x-ratelimit-remaining-tokens",
        d.tokens.remaining.to_string(),
    );
    put("x-ratelimit-reset-tokens", reset_text(d.tokens.reset));
}

/// Runs when an admitted answer's body is done (or dropped): frees the
/// queue slot and settles the token reservation.
struct Finish {
    state: AppState,
    caller: Caller,
    estimate: u32,
    spent: Spent,
    failed: bool,
    _permit: Option<Permit>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        // A failed request generated nothing: give the reservation back.
        let actual = self
            .spent
            .get()
            .unwrap_or(if self.failed { 0 } else { self.estimate });
        if self.state.edge().limiter().settle_now(
            &self.caller.subject,
            self.caller.policy,
            self.estimate,
            actual,
        ) {
            return;
        }
        let state = self.state.clone();
        let subject = std::mem::take(&mut self.caller.subject);
        let (policy, estimate) = (self.caller.policy, self.estimate);
        // Redis is one round trip under its timeout, which must not hold the
        // slot or the response: a task of its own.
        // A body dropped while the runtime shuts down has nothing to settle.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            state
                .edge()
                .limiter()
                .settle(&subject, policy, estimate, actual)
                .await;
        });
    }
}

/// A response body that keeps [`Finish`] alive until the body ends.
struct Guarded {
    inner: Body,
    _finish: Finish,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
