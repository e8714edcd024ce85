//! `orinari keys create|list|revoke`: API keys in the configured store. The
//! key is printed once on stdout; only its hash is stored.

use anyhow::Context;
use orinari_config::Config;
use orinari_limits::{KeySpec, create_key};
use orinari_store::Store;

/// The key subcommands.
#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once (only its hash is stored).
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        name: String,
        /// Requests per minute (default: [limits] requests_per_minute).
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute (default: [limits] tokens_per_minute).
        #[arg(long)]
        tpm: Option<u32>,
        /// Models the key may use, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Queue priority from -100 to 100; higher is served first (default 0).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true,
              value_parser = clap::value_parser!(i32).range(-100..=100))]
        priority: i32,
        /// Requests running at once (default: [limits] max_concurrent_per_key).
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// Prompt-injection policy for this key: block, flag or off
        /// (default: [guard] prompt_injection).
        #[arg(long, value_parser = ["block", "flag", "off"])]
        prompt_injection: Option<String>,
        /// Data sources the key's grounded answers may search,
        /// comma-separated (default: every source of the model).
        #[arg(long, value_delimiter = ',')]
        sources: Option<Vec<String>>,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (`key_…`, from `keys list`).
        id: String,
    },
}

/// Whether a command failed because of what the user asked (exit 1) or at
/// run time (exit 2).
pub enum Failure {
    /// Bad input: the message names the option.
    Usage(String),
    /// The store failed.
    Runtime(anyhow::Error),
}

/// Run one key command against the configured store.
pub async fn command(config: &Config, command: KeysCommand) -> Result<(), Failure> {
    let store = || async {
        Store::open(&config.storage_url)
            .await
            .context("opening the store")
            .map_err(Failure::Runtime)
    };
    match command {
        KeysCommand::Create {
            name,
            rpm,
            tpm,
            models,
            priority,
            max_concurrent,
            prompt_injection,
            sources,
        } => {
            let spec = KeySpec {
                name,
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                allowed_models: models,
                priority,
                max_concurrent,
                prompt_injection: prompt_injection
                    .as_deref()
                    .and_then(orinari_limits::callers::policy),
                allowed_sources: sources,
            };
            spec.validate().map_err(|(field, why)| {
                let flag = match field {
                    "requests_per_minute" => "--rpm",
                    "tokens_per_minute" => "--tpm",
                    "allowed_models" => "--models",
                    "allowed_sources" => "--sources",
                    "max_concurrent" => "--max-concurrent",
                    _ => "--name",
                };
                Failure::Usage(format!("{flag}: {why}"))
            })?;
            let store = store().await?;
            let created = create_key(&store, spec)
                .await
                .context("creating the key")
                .map_err(Failure::Runtime)?;
            store.close().await;
            eprintln!(
                "created {} ({}); the key is shown once:",
                created.record.id, created.record.name
            );
            println!("{}", created.secret);
        }
        KeysCommand::List => {
            let store = store().await?;
            let keys = store
                .list_keys()
                .await
                .context("listing keys")
                .map_err(Failure::Runtime)?;
            store.close().await;
            println!(
                "{:<22} {:<24} {:<12} {:>8} {:>10}  status",
                "id", "name", "prefix", "rpm", "tpm"
            );
            for k in keys {
                let dash = || "-".to_string();
                println!(
                    "{:<22} {:<24} {:<12} {:>8} {:>10}  {}",
                    k.id,
                    k.name,
                    k.prefix,
                    k.requests_per_minute.map_or_else(dash, |n| n.to_string()),
                    k.tokens_per_minute.map_or_else(dash, |n| n.to_string()),
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let store = store().await?;
            let revoked = store
                .revoke_key(&id)
                .await
                .context("revoking the key")
                .map_err(Failure::Runtime)?;
            store.close().await;
            if !revoked {
                return Err(Failure::Usage(format!("no active key has the id `{id}`")));
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}
