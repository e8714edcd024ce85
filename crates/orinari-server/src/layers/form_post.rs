//! The no-JS chat form (`POST /`) runs the model, so it meets the same
//! edge as `/v1`: `api_auth` and `rate_limit` sit inside this layer. Two
//! things differ for a form, and they are this layer's:
//!
//! - a page without script sends its API key as the form field `api_key`
//!   (it has no other place to keep it): it counts as the bearer token,
//!   unless the request carries one of its own;
//! - a refusal by the edge (an error in the OpenAI envelope, which carries
//!   its message as [`ErrorMessage`]) becomes the page again with the
//!   reason, keeping the refusal's status and headers (`Retry-After`,
//!   `WWW-Authenticate`, `x-ratelimit-*`). The page is rendered by the
//!   function `stack.rs` hands in, so no layer imports a page.
//!
//! Other methods pass through. A form post's body is read here once,
//! within the body limit and timeout; the future is boxed (form posts are
//! not the hot path).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use tower::util::Oneshot;
use tower::{Layer, Service};

use crate::AppState;
use crate::error::{ErrorMessage, HttpError};
use crate::http;

/// Renders the page for a refused form post: the state, the form body,
/// the refusal's status and message.
pub type Refused = fn(&AppState, &[u8], StatusCode, &str) -> Response;

/// The layer; see the module docs.
#[derive(Clone)]
pub struct FormPostLayer {
    state: AppState,
    refused: Refused,
}

impl FormPostLayer {
    /// Form posts through `state`'s edge, refusals rendered by `refused`.
    pub fn new(state: AppState, refused: Refused) -> Self {
        Self { state, refused }
    }
}

impl<S> Layer<S> for FormPostLayer {
    type Service = FormPost<S>;
    fn layer(&self, inner: S) -> FormPost<S> {
        FormPost {
            inner,
            state: self.state.clone(),
            refused: self.refused,
        }
    }
}

/// The service behind [`FormPostLayer`].
#[derive(Clone)]
pub struct FormPost<S> {
    inner: S,
    state: AppState,
    refused: Refused,
}

type Boxed<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

impl<S> Service<Request<Body>> for FormPost<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Boxed<S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if req.method() != Method::POST {
            return Either::Left(self.inner.call(req));
        }
        // The inner service runs from the future: a clone takes the place
        // of the one made ready for this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (state, refused) = (self.state.clone(), self.refused);
        Either::Right(Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let bytes = match http::read_body(body, state.max_body_bytes()).await {
                Ok(b) => b,
                Err(e) => return Ok(HttpError(e).into_response()),
            };
            if !parts.headers.contains_key(header::AUTHORIZATION)
                && let Some(key) = form_field(&bytes, "api_key").filter(|k| !k.trim().is_empty())
                && let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            {
                parts.headers.insert(header::AUTHORIZATION, value);
            }
            let req = Request::from_parts(parts, Body::from(bytes.clone()));
            let res = Oneshot::new(inner, req).await?;
            Ok(as_page(&state, refused, &bytes, res))
        }))
    }
}

/// A refusal by the edge becomes the page with the reason; anything else
/// (the page itself) passes.
fn as_page(state: &AppState, refused: Refused, form: &Bytes, res: Response) -> Response {
    let (mut parts, body) = res.into_parts();
    let Some(ErrorMessage(message)) = parts.extensions.remove::<ErrorMessage>() else {
        return Response::from_parts(parts, body);
    };
    let mut page = refused(state, form, parts.status, &message);
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
