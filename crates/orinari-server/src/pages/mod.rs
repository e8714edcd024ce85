//! Server-rendered pages and their static assets.
//!
//! Pages are askama templates checked at compile time; every value is
//! HTML-escaped by the template. Handlers here are thin: extract, call one
//! function of [`conversation`], render.

pub mod assets;
pub mod chat;
pub mod conversation;
pub mod status;
