//! `GET /` (the chat page), `POST /` (the same page answering a form without
//! JavaScript) and `GET /assets/{name}`.
//!
//! Caching: the page is `no-cache` with a weak ETag (it names the hashed
//! assets, so a revalidation picks up a new build); assets are `immutable`
//! for a year; a page that carries a conversation is `no-store`.

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use orinari_limits::Caller;
use serde::Deserialize;

use super::assets::{ASSETS, Assets, fnv1a};
use super::conversation::{self, Action, MAX_TOKENS, Role, TEMPERATURE, Turn};
use crate::AppState;

const HTML: &str = "text/html; charset=utf-8";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The page, as askama renders it.
#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage<'a> {
    assets: &'a Assets,
    models: Vec<&'a str>,
    selected: &'a str,
    turns: &'a [Turn],
    state: String,
    draft: &'a str,
    error: Option<&'a str>,
    can_regenerate: bool,
    max_tokens: u32,
    temperature: f32,
    key_required: bool,
    api_key: &'a str,
}

/// The fields of the chat form.
#[derive(Debug, Default, Deserialize)]
pub struct ChatForm {
    #[serde(default)]
    model: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    conversation: String,
    #[serde(default)]
    action: Option<String>,
    /// Sent when `[auth] required = true`: the form's own API key field (the
    /// page carries it back, since a page without script keeps no state).
    /// The form-post edge (`layers/form_post.rs`) has already checked it.
    #[serde(default)]
    api_key: String,
}

/// `GET /`: an empty conversation.
pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let page = Page::new(&state, "");
    let html = match page.render("", &[], "", None) {
        Ok(html) => html,
        Err(e) => return e.into_response(),
    };
    let etag = format!("W/\"{:016x}\"", fnv1a(html.as_bytes()));
    let cache = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::VARY, "accept-encoding"),
    ];
    if matches(&headers, &etag) {
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

/// `POST /`: apply the form's action and answer with the whole page.
pub async fn submit(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    form: Result<Form<ChatForm>, FormRejection>,
) -> Response {
    let max_chars = state.limits().max_input_chars;
    let (form, rejected) = match form {
        Ok(Form(form)) => (form, None),
        Err(r) => (ChatForm::default(), Some(rejection_message(r.status()))),
    };
    let page = Page::new(&state, &form.api_key);
    let decoded = match rejected {
        Some(message) => Err((StatusCode::BAD_REQUEST, message.to_string())),
        None => conversation::decode(&form.conversation, max_chars).map_err(page_error),
    };
    let turns = match decoded {
        Ok(turns) => turns,
        Err((status, message)) => {
            return respond(status, page.render("", &[], "", Some(&message)));
        }
    };
    let Some(model) = state
        .model(&form.model)
        .or_else(|| state.models().into_iter().next())
    else {
        let e = (StatusCode::SERVICE_UNAVAILABLE, "No model is configured.");
        return respond(e.0, page.render("", &turns, &form.message, Some(e.1)));
    };
    let action = Action::parse(form.action.as_deref());
    let caller = caller.map_or_else(
        // The form-post edge always resolves one; without it, anonymous.
        || Caller::anonymous("ip:unknown".into(), &state.edge().config().limits),
        |axum::Extension(c)| c,
    );
    let live = state.live();
    let result = conversation::step(
        &live.chat,
        &caller,
        &model.name,
        turns.clone(),
        action,
        &form.message,
        max_chars,
    )
    .await;
    match result {
        Ok(stepped) => {
            let mut res = respond(
                StatusCode::OK,
                page.render(&model.name, &stepped.turns, "", None),
            );
            if stepped.flagged {
                crate::http::mark_flagged(res.headers_mut());
            }
            res
        }
        Err(e) => {
            // A full queue or an exhausted token budget: say when to retry,
            // as the edge's refusals of a form post do.
            let retry_after = e.retry_after.filter(|_| {
                matches!(
                    e.code,
                    Some("queue_full" | "queue_timeout" | "tokens_exceeded")
                )
            });
            let (status, message) = page_error(e);
            let html = page.render(&model.name, &turns, &form.message, Some(&message));
            let mut res = respond(status, html);
            if let Some(secs) = retry_after {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            res
        }
    }
}

/// A form post that the edge refused before the handler ran (no or a wrong
/// API key, a rate limit, a full queue): the same page with the reason in
/// it and the conversation and draft kept, so nothing typed is lost. A
/// refused key is not carried back.
pub fn refused(state: &AppState, body: &[u8], status: StatusCode, message: &str) -> Response {
    let mut form = ChatForm::default();
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "model" => form.model = v.into_owned(),
            "message" => form.message = v.into_owned(),
            "conversation" => form.conversation = v.into_owned(),
            "api_key" if status != StatusCode::UNAUTHORIZED => form.api_key = v.into_owned(),
            _ => {}
        }
    }
    let turns = conversation::decode(&form.conversation, state.limits().max_input_chars)
        .unwrap_or_default();
    let page = Page::new(state, &form.api_key);
    respond(
        status,
        page.render(&form.model, &turns, &form.message, Some(message)),
    )
}

/// `GET /assets/{name}`: an embedded file under its hashed name.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = ASSETS.get(&name) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Not found.\n",
        )
            .into_response();
    };
    let cache = [
        (header::CACHE_CONTROL, IMMUTABLE),
        (header::VARY, "accept-encoding"),
    ];
    if matches(&headers, &a.etag) {
        return (
            StatusCode::NOT_MODIFIED,
            cache,
            [(header::ETAG, a.etag.clone())],
        )
            .into_response();
    }
    (
        cache,
        [
            (header::CONTENT_TYPE, a.content_type.to_string()),
            (header::ETAG, a.etag.clone()),
        ],
        a.bytes,
    )
        .into_response()
}

/// What every rendering of the page shares.
struct Page<'a> {
    models: Vec<String>,
    key_required: bool,
    api_key: &'a str,
}

impl<'a> Page<'a> {
    fn new(state: &AppState, api_key: &'a str) -> Self {
        Self {
            models: state.models().into_iter().map(|m| m.name).collect(),
            key_required: state.edge().config().auth_required,
            api_key,
        }
    }

    fn render(
        &self,
        selected: &str,
        turns: &[Turn],
        draft: &str,
        error: Option<&str>,
    ) -> Result<String, RenderFailed> {
        let page = ChatPage {
            assets: &ASSETS,
            models: self.models.iter().map(String::as_str).collect(),
            selected,
            turns,
            state: conversation::encode(turns),
            draft,
            error,
            can_regenerate: turns.last().is_some_and(|t| t.role == Role::Assistant),
            max_tokens: MAX_TOKENS,
            temperature: TEMPERATURE,
            key_required: self.key_required,
            api_key: self.api_key,
        };
        page.render().map_err(|e| {
            tracing::error!(error = %e, "page template failed");
            RenderFailed
        })
    }
}

/// A template failed to render (a bug, not a client error).
struct RenderFailed;

impl IntoResponse for RenderFailed {
    fn into_response(self) -> Response {
        let text = "The page could not be rendered.\n";
        (StatusCode::INTERNAL_SERVER_ERROR, text).into_response()
    }
}

/// A page that carries a conversation: never cached anywhere.
fn respond(status: StatusCode, page: Result<String, RenderFailed>) -> Response {
    match page {
        Ok(html) => (
            status,
            [
                (header::CONTENT_TYPE, HTML),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn page_error(e: orinari_api::ApiError) -> (StatusCode, String) {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(status = e.status, code = e.code, "chat form failed");
    }
    (status, e.message)
}

fn rejection_message(status: StatusCode) -> &'static str {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        "The conversation is too large to send; start a new chat."
    } else {
        "The form could not be read; start a new chat."
    }
}

/// `If-None-Match` holds `etag` (weak comparison, as RFC 9110 asks for GET).
fn matches(headers: &HeaderMap, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let ours = strip(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || strip(t) == ours)
}
