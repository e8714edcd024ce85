//! Tower layers written for this server, one module each; they are composed
//! only in `stack.rs`.

pub mod admin_auth;
pub mod security_headers;
