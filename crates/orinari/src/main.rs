//! The `orinari` binary: parse arguments, load config, wire, wait for signals.
//! No logic that a test needs lives here.
#![allow(clippy::print_stdout, reason = "a CLI prints its answers on stdout")]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

mod backup;
mod gateway;
mod keys;
mod reload;
mod sources;
mod threads;
mod upgrade;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orinari_config::Config;
use orinari_models::ModelBackend;
use orinari_models::local::{EngineOptions, LocalConfig, LocalModel, default_model_path};
use orinari_server::{AppState, ServedModel};
use orinari_store::Store;
use orinari_store::backup::{Backups, Health, Schedule};

/// mimalloc rather than glibc's malloc: a proxied request allocates and frees
/// buffers and futures on both worker threads, and glibc spent ~17% of the
/// gateway's samples in malloc, free and its arena locks. BENCHMARKS.md has
/// the A/B (under the gateway table); `--no-default-features` builds without
/// it, for heap profilers that hook malloc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for usage and configuration errors.
const EXIT_USAGE: u8 = 1;
/// Exit code for failures at run time.
const EXIT_RUNTIME: u8 = 2;

#[derive(Parser)]
#[command(
    name = "orinari",
    version,
    about = "A self-hosted AI assistant platform in one binary"
)]
struct Cli {
    /// Configuration file (default: ./orinari.toml if present, else the embedded defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform.
    Serve {
        /// Upgrade the server already running with this configuration
        /// instead (what SIGUSR2 does): its binary is started again with the
        /// listening sockets, the old process drains; exit 0 once the new
        /// one serves, 2 if the old one serves on.
        #[arg(long)]
        upgrade: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// API keys for /v1 (shown once; only a hash is stored).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Backups of the embedded store.
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// Data sources of grounded answers.
    Sources {
        #[command(subcommand)]
        command: sources::SourcesCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file; exit 1 with file:line:column and the reason.
    Check {
        /// The file to check (default: --config, ./orinari.toml, or the embedded defaults).
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // The process an upgrade starts starts the new server and exits.
    if let Some(code) = upgrade::relaunch_detached() {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Version => {
            println!("orinari {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => {
            let path = orinari_config::discover(file.or(cli.config));
            match orinari_config::load(path.as_deref(), std::env::vars()) {
                Ok(_) => {
                    let name = path.map_or("embedded defaults".into(), |p| p.display().to_string());
                    println!("{name}: ok");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        Command::Keys { command } => {
            let config = match load_config(cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let done = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(keys::command(&config, command)),
                Err(e) => Err(keys::Failure::Runtime(e.into())),
            };
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(keys::Failure::Usage(msg)) => {
                    eprintln!("error: {msg}");
                    ExitCode::from(EXIT_USAGE)
                }
                Err(keys::Failure::Runtime(e)) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Command::Backup { command } => {
            let config = match load_config(cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let done = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(backup::command(&config, command)));
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Command::Sources { command } => {
            let config = match load_config(cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let done = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(sources::command(&config, command)),
                Err(e) => Err(sources::Failure::Runtime(e.into())),
            };
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(sources::Failure::Usage(msg)) => {
                    eprintln!("error: {msg}");
                    ExitCode::from(EXIT_USAGE)
                }
                Err(sources::Failure::Runtime(e)) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
        Command::Serve { upgrade } => {
            let path = orinari_config::discover(cli.config);
            let config = match load_config(path.clone()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if upgrade {
                // The configuration was just checked: a file the new process
                // would refuse is reported here, before anything is signalled.
                let listen = config.server.listen;
                return match upgrade::request(listen) {
                    Ok((old, new)) => {
                        println!(
                            "upgraded: pid {new} serves on {listen}; pid {old} drains and exits"
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: upgrade failed: {e:#}");
                        ExitCode::from(EXIT_RUNTIME)
                    }
                };
            }
            // Size candle's inference pool: the environment it reads is set
            // by starting this binary again, before anything else runs.
            threads::apply(&config);
            init_logging();
            tracing::info!(
                inference_threads = std::env::var("CANDLE_NUM_THREADS").unwrap_or_default(),
                cores = std::thread::available_parallelism().map_or(1, |n| n.get()),
                "inference threads"
            );
            match serve(config, path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "orinari stopped");
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }
    }
}

/// The configuration for `serve` and `backup`, or the usage exit code after
/// printing why.
fn load_config(explicit: Option<PathBuf>) -> Result<Config, ExitCode> {
    let path = orinari_config::discover(explicit);
    orinari_config::load(path.as_deref(), std::env::vars()).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// JSON logs on stderr; `ORINARI_LOG` (or `RUST_LOG`) filters, default `info`.
fn init_logging() {
    let filter = std::env::var("ORINARI_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

fn serve(config: Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let locals = runtime.block_on(run(config, path))?;
    // The server has drained, or its deadline passed with streams still
    // running in their connection tasks: drop those tasks now (cancelling
    // their generations) rather than wait for them to finish.
    runtime.shutdown_timeout(Duration::from_secs(1));
    // Then stop the inference threads.
    locals.iter().for_each(|m| m.shutdown());
    tracing::info!("stopped");
    Ok(())
}

/// The embedded embedding model, served as `orinari-embed` when its files
/// are installed, loaded on its first request (so a server that never
/// embeds reads nothing); `None`, and a note in the log, when they are not.
fn embedder(config: &Config) -> Option<Arc<orinari_embed::Embedder>> {
    let dir = orinari_embed::default_model_dir();
    let embedder = orinari_embed::Embedder::new(dir.clone(), config.queue_depth);
    if embedder.installed() {
        tracing::info!(
            model = orinari_embed::MODEL,
            "embedding model served, loaded on first use"
        );
        return Some(Arc::new(embedder));
    }
    tracing::info!(
        model = orinari_embed::MODEL,
        path = %dir.display(),
        "embedding model not served: its files are missing (make model, scripts/fetch-embed-model.sh, or set ORINARI_EMBED_MODEL_PATH)"
    );
    None
}

/// Each served model with its own concurrency cap (an embedded model's
/// `parallel`), for the admission queues.
fn model_caps(config: &Config) -> Vec<(String, Option<usize>)> {
    config
        .models
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.upstream.is_none().then_some(m.local.parallel),
            )
        })
        .collect()
}

async fn run(config: Config, path: Option<PathBuf>) -> anyhow::Result<Vec<Arc<LocalModel>>> {
    for section in &config.inactive {
        tracing::warn!(section, "configured but not active in this version");
    }
    let store = Store::open(&config.storage_url)
        .await
        .with_context(|| format!("storage `{}`", redact_url(&config.storage_url)))?;
    let backups = match &config.backup {
        Some(b) => {
            let live = orinari_store::sqlite_path(&config.storage_url)
                .context("built-in backups need the embedded SQLite store")?;
            Some((
                Arc::new(Backups::new(
                    store.clone(),
                    live,
                    backup::engine_config(b)?,
                )?),
                Schedule {
                    snapshot_every: b.interval,
                    verify_every: b.verify_interval,
                    alert_after: b.rpo,
                },
            ))
        }
        None => None,
    };
    // The guard (rules, n-gram model, sentence encoder: ~0.2 s) loads on a
    // blocking thread of its own while the embedded models load (~0.6 s),
    // so a new process is ready sooner after an upgrade's SIGUSR2. Joined
    // below, before the state is built.
    let prompt_injection = config.prompt_injection;
    let screening =
        tokio::task::spawn_blocking(move || orinari_chat::Screening::embedded(prompt_injection));
    let mut locals = Vec::new();
    let mut named = Vec::new();
    let mut served = Vec::new();
    for m in config.models.iter().filter(|m| m.upstream.is_none()) {
        let path = m.local.path.clone().unwrap_or_else(default_model_path);
        if !path.is_file() {
            anyhow::bail!(
                "model `{}`: no model file at {} (run `make serve`, or scripts/fetch-model.sh, or set ORINARI_MODEL_PATH)",
                m.name,
                path.display()
            );
        }
        let local = LocalConfig {
            path,
            context_size: m.local.context_size,
            max_active: m.local.parallel,
            queue_depth: config.queue_depth,
            requantize: m.local.requantize,
        };
        let started = std::time::Instant::now();
        let opts = EngineOptions {
            prefix_cache_mib: m.local.prefix_cache_mib,
            ..EngineOptions::default()
        };
        let model = Arc::new(
            tokio::task::spawn_blocking(move || LocalModel::load_with(&local, &opts)).await??,
        );
        tracing::info!(
            model = %m.name,
            context_window = model.info().context_window,
            load_ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        locals.push(model.clone());
        named.push((m.name.clone(), model.clone()));
        served.push(ServedModel {
            name: m.name.clone(),
            backend: model,
        });
    }
    let admin_hash = admin_token(&store, &config.server.admin_token_env).await?;
    let mut state = AppState::new(
        served.clone(),
        config.max_input_chars,
        config.max_body_bytes,
    )
    .with_store(store.clone())
    .with_admin_token_hash(admin_hash)
    .with_edge(orinari_limits::Edge::new(
        config.admission.clone(),
        &model_caps(&config),
    ))
    .with_screening(screening.await??)
    .with_embedder(embedder(&config));
    for (name, model) in &named {
        model.attach_prefix_metrics(state.metrics().models.prefix_cache(name));
    }
    // Every served model goes through the gateway: pools of upstream
    // backends and the embedded models. It owns the health-check tasks and
    // stops them after the server drains.
    let gateway = gateway::build(
        &config,
        |name| {
            served
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.backend.clone())
        },
        state.metrics().models.clone(),
    )?;
    state = state
        .with_gateway(gateway)
        .with_reloader(reload::reloader(path, config.clone()));
    // The exact response cache of the models that opted in: in memory, or
    // in Redis (sealed with a key made now) when the cluster shares one.
    let cached: Vec<_> = config
        .models
        .iter()
        .filter_map(|m| m.cache.map(|c| (m.name.as_str(), c)))
        .collect();
    if !cached.is_empty() {
        let cache = orinari_chat::ResponseCache::new(
            cached,
            config.admission.redis_url.as_deref(),
            &state.metrics().models,
        )
        .map_err(anyhow::Error::msg)?;
        state = state.with_response_cache(cache);
    }
    // Data sources: files sources index on their own threads from here on,
    // never on a request; the indexers are owned here and stopped after
    // the drain. A source that cannot start reports why in its status and
    // on each search; it never stops the instance or its readiness.
    let mut indexer = None;
    if let Some((started, indexers)) = sources::start(&config).await? {
        let shared = sources::shared(indexers);
        let retrieval = sources::retrieval(&config, started, state.metrics());
        state = state.with_retrieval(retrieval).with_indexer(shared.clone());
        indexer = Some(shared);
    }
    // The backup scheduler is owned here and stopped after the server drains,
    // with a last journal shipment on its way out.
    let (stop_backups, stopped) = tokio::sync::watch::channel(false);
    let mut scheduler = None;
    if let Some((engine, schedule)) = backups {
        let (health, health_rx) = tokio::sync::watch::channel(Health::default());
        state = state.with_backups(engine.clone(), health_rx);
        #[expect(
            clippy::disallowed_methods,
            reason = "joined after the drain, in the shutdown order below"
        )]
        let task = tokio::spawn(engine.run(schedule, health, stopped));
        scheduler = Some(task);
    }
    // The status page's service (probes, maintenance clock, notifications) is
    // owned here too and stopped after the server drains, before the store closes.
    let status = Arc::new(
        orinari_status::StatusService::open(store.clone(), &config.status, orinari_store::now_ms())
            .await
            .context("status page ([status])")?,
    );
    state = state.with_status(status.clone());
    let leadership = status.leadership();
    state.metrics().analytics.set_region(&config.server.region);
    let (stop_status, status_stopped) = tokio::sync::watch::channel(false);
    #[expect(
        clippy::disallowed_methods,
        reason = "joined after the drain, before the store closes (below)"
    )]
    let status_task = tokio::spawn(status.run(status_stopped));
    // Sockets handed over by the process this one replaces (SIGUSR2) or by
    // systemd's socket activation are used as they are; else bind.
    let inherited = upgrade::Inherited::from_env().context("LISTEN_FDS")?;
    let listener = listen(inherited.http, config.server.listen).await?;
    let addr = listener.local_addr()?;
    let https = match &config.tls {
        Some(t) => {
            let mut tls = orinari_server::tls::Tls::new(t.clone()).context("[server.tls]")?;
            // Several instances on one PostgreSQL store share the ACME
            // account and certificate through it, sealed; SQLite keeps files.
            if let Some(a) = &t.acme
                && store.backend() == orinari_store::Backend::Postgres
            {
                tls = tls.with_shared_acme(store.clone(), acme_key(a)?);
            }
            Some((listen(inherited.https, t.listen).await?, tls))
        }
        None => None,
    };
    let handover = upgrade::Handover::new(&listener, https.as_ref().map(|(l, _)| l))?;
    // This instance in the store's list of instances (`/admin/v1/instances`),
    // before it serves; the heartbeat task is owned here, stops when the
    // drain begins (an upgraded process writes the row from then on) and is
    // joined before the store closes.
    let mut registration = orinari_store::Registration::new(
        store.clone(),
        format!("{}:{}", hostname(), addr.port()),
        Some(config.server.region.clone()),
        env!("CARGO_PKG_VERSION").to_string(),
        config_hash(&config),
    );
    registration.register().await;
    state = state.with_instance(registration.id().to_string());
    let (stop_registration, registration_stopped) = tokio::sync::watch::channel(false);
    #[expect(
        clippy::disallowed_methods,
        reason = "stopped when the drain begins, joined before the store closes (below)"
    )]
    let registration_task = tokio::spawn(registration.run(leadership, registration_stopped));
    // Signal handlers are installed before the address is announced, so a
    // SIGTERM sent as soon as it is announced drains instead of killing.
    let shutdown = shutdown_signal(state.clone(), handover);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_registration.send(true);
    };
    tracing::info!(%addr, "listening");
    eprintln!("orinari is serving on http://{addr}/v1 (chat API)");
    if let Some((l, t)) = &https {
        let addr = l.local_addr()?;
        tracing::info!(%addr, modern = t.config.modern, "listening (TLS)");
        eprintln!("orinari is serving on https://{addr}/v1 (chat API; http redirects here)");
    }
    // The listeners accept from here on (connections queue in the kernel
    // until the server's first accept): the process this one replaces may
    // stop accepting now.
    upgrade::announce_ready();
    orinari_server::serve_all(
        listener,
        https,
        state.clone(),
        shutdown,
        config.server.shutdown_timeout,
    )
    .await?;
    // The gateway serving now (a reload may have replaced the first one).
    if let Some(gateway) = state.gateway() {
        gateway.shutdown();
    }
    // The embedding model's thread (its queue is empty once drained).
    if let Some(embedder) = state.live().chat.embedder().cloned() {
        let _ = tokio::task::spawn_blocking(move || embedder.shutdown()).await;
    }
    if let Some(shared) = indexer {
        let taken = shared.lock().ok().and_then(|mut i| i.take());
        sources::stop(taken).await;
    }
    if tokio::time::timeout(Duration::from_secs(5), registration_task)
        .await
        .is_err()
    {
        tracing::warn!("the instance registration did not stop in time");
    }
    let _ = stop_status.send(true);
    if tokio::time::timeout(Duration::from_secs(10), status_task)
        .await
        .is_err()
    {
        tracing::warn!("the status service did not stop in time");
    }
    let _ = stop_backups.send(true);
    if let Some(task) = scheduler
        && tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
    {
        tracing::warn!("the backup scheduler did not stop in time");
    }
    store.close().await;
    Ok(locals)
}

/// The key sealing the ACME state shared through a PostgreSQL store, read
/// once at start from the variable named by `server.tls.acme.key_env`
/// (required there by config validation). Errors name the key, never its value.
fn acme_key(acme: &orinari_config::tls::AcmeConfig) -> anyhow::Result<orinari_store::AcmeKey> {
    let var = acme
        .key_env
        .as_deref()
        .context("server.tls.acme.key_env: is required with a PostgreSQL store")?;
    let text = std::env::var(var).map_err(|_| {
        anyhow::anyhow!(
            "server.tls.acme.key_env: the environment variable {var} is not set; \
             set it to the same 32 random bytes in base64 on every instance (e.g. `openssl rand -base64 32`)"
        )
    })?;
    orinari_store::AcmeKey::from_base64(&text)
        .map_err(|e| anyhow::anyhow!("server.tls.acme.key_env ({var}): {e}"))
}

/// The admin token's SHA-256: from the environment variable named by
/// `server.admin_token_env` when set; else the hash kept in the store; else a
/// new token, generated now, printed once on stderr, and only its hash kept.
async fn admin_token(store: &Store, env: &str) -> anyhow::Result<[u8; 32]> {
    const SETTING: &str = "admin_token_sha256";
    if let Ok(token) = std::env::var(env)
        && !token.trim().is_empty()
    {
        return Ok(orinari_server::hash_token(token.trim()));
    }
    if let Some(hex) = store.setting(SETTING).await? {
        return from_hex(&hex).context("the stored admin token hash is malformed");
    }
    let token = format!(
        "ora_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = orinari_server::hash_token(&token);
    store.set_setting(SETTING, &to_hex(&hash)).await?;
    eprintln!("admin token (shown once; set {env} to choose your own): {token}");
    Ok(hash)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The hash `/admin/v1/instances` compares: SHA-256 of the configuration
/// every instance should share, 64 bits of it in hex.
fn config_hash(config: &Config) -> String {
    to_hex(&orinari_server::hash_token(&config.cluster_text())[..8])
}

/// This machine's name, for the instance id (a pod's name on Kubernetes).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A listener handed over (see [`upgrade`]) or, without one, bound now.
async fn listen(
    inherited: Option<std::net::TcpListener>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    match inherited {
        Some(l) => Ok(tokio::net::TcpListener::from_std(l)?),
        None => tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}")),
    }
}

/// Installs the signal handlers now and resolves on SIGTERM, or once a new
/// process took over the listeners (SIGUSR2). SIGINT exits at once; SIGHUP
/// reloads the configuration and the TLS certificate.
fn shutdown_signal(
    state: AppState,
    handover: upgrade::Handover,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::user_defined2()),
    );
    async move {
        let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr2)) = handlers else {
            tracing::error!("cannot install signal handlers");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = usr2.recv() => {
                    tracing::info!("SIGUSR2: starting the new binary");
                    // SIGTERM or SIGINT while the new process starts stops
                    // it (dropped, it is killed) and goes on as usual.
                    tokio::select! {
                        handed = handover.hand_over() => match handed {
                            Ok(pid) => {
                                tracing::info!(pid, "upgrade: the new process is ready; draining");
                                return;
                            }
                            Err(e) => tracing::error!(
                                error = %format!("{e:#}"),
                                "upgrade failed; this process serves on"
                            ),
                        },
                        _ = term.recv() => {
                            tracing::info!("SIGTERM during an upgrade: draining");
                            return;
                        }
                        _ = int.recv() => std::process::exit(130),
                    }
                }
                _ = term.recv() => {
                    tracing::info!("SIGTERM: draining");
                    return;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: exiting now");
                    std::process::exit(130);
                }
                // The outcome is logged by the reload itself.
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    let _ = state.reload().await;
                }
            }
        }
    }
}
