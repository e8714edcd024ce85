//! Configuration in two stages: the raw TOML shape (unknown keys rejected,
//! every default a named constant, `ORINARI_<SECTION>_<KEY>` environment
//! overrides) becomes a validated [`Config`] once, with errors that name the
//! file, line, column or key and say why.

pub mod admission;
mod fingerprint;
mod locate;
pub mod models;
mod raw;
pub mod reload;
pub mod sources;
mod status;
pub mod tls;
mod validate;

use std::path::{Path, PathBuf};

pub use raw::defaults;
pub use status::{
    AlertKind, AlertSettings, CheckSettings, ComponentSettings, SmtpSettings, StatusSettings,
    VisitorWebhookSettings, WEBHOOK_MAX_FAILURES, WebhookSettings, slug,
};
pub use validate::{
    BackupSettings, Config, KeySource, LocalModelConfig, ModelConfig, PromptInjection,
    ResponseCacheConfig, ServerConfig,
};

/// A configuration problem, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// No file: the embedded defaults (plus environment overrides).
    Defaults,
}

/// Load from a file, or the embedded defaults when `path` is `None`, then
/// apply environment overrides from `env` and validate.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let (text, name) = match path {
        Some(p) => (
            std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("{}: cannot read: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => (String::new(), "<defaults>".to_string()),
    };
    parse(&text, &name, env)
}

/// Parse configuration text (`name` is used in messages).
pub fn parse(
    text: &str,
    name: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let (raw, overridden) = raw::parse(text, name, env)?;
    validate::validate(raw, name).map_err(|e| locate::place(e, text, name, &overridden))
}

/// The config file to use: `--config`, else `orinari.toml` in the working
/// directory if present, else none (embedded defaults).
pub fn discover(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        let p = PathBuf::from("orinari.toml");
        p.is_file().then_some(p)
    })
}
