//! Tower layers written for this server, one module each; they are composed
//! only in `stack.rs`. A layer imports no route or page: what they share
//! lives in `crate::http`.

pub mod admin_auth;
pub mod api_auth;
pub mod firewall;
pub mod form_post;
pub mod http_metrics;
pub mod https_redirect;
pub mod rate_limit;
pub mod route;
pub mod security_headers;
