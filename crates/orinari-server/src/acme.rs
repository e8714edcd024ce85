//! Automatic certificates (ACME, RFC 8555, HTTP-01) with `instant-acme`.
//!
//! One instance (SQLite store, or none): the account and the certificate
//! live in `cache_dir` (private keys 0600); a certificate that expires
//! within `renew_before` (or is missing) is ordered again, the challenge
//! answered on the plain listener at `/.well-known/acme-challenge/{token}`,
//! and the new pair written atomically and loaded into the running TLS
//! listener — no restart.
//!
//! A cluster (several instances on one PostgreSQL store, [`Acme::shared`]):
//! only the instance holding the `acme` leader lock orders and renews
//! (another takes over when it dies or stops); the account credentials and
//! the certificate chain with its key are kept in the store sealed with
//! AES-256-GCM ([`orinari_store::AcmeKey`], `acme.key_env`), never on disk;
//! every instance polls the stored certificate's version and swaps a new one
//! in; and the leader publishes its HTTP-01 key authorizations in the store
//! while an order is open, so whichever instance the CA's request reaches
//! answers it.
//!
//! Until the first certificate arrives, handshakes get a self-signed
//! placeholder for the configured names.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use orinari_config::tls::AcmeConfig;
use orinari_store::{AcmeKey, Store};
use tokio::sync::watch;

use crate::tls::Certificates;

/// How soon a failed issuance is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// How often every instance of a cluster looks for a new certificate in
/// the store (one indexed single-row read).
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);
/// The leader lock's name: ACME contends for a lock of its own, apart from
/// the status page's singleton jobs, because it runs with the TLS listener
/// (it starts and stops with `serve_all`, and hands over as soon as a
/// draining instance stops), not with the status service.
pub const LEADER_ROLE: &str = "acme";
/// How long a published HTTP-01 key authorization stays answerable at most.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME server or the protocol failed.
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// The order did not become ready.
    #[error("ACME order ended as {0}")]
    Order(String),
    /// A cache file could not be read or written.
    #[error("ACME cache {path}: {why}")]
    Cache {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The shared store could not be read or written.
    #[error("ACME store: {0}")]
    Store(#[from] orinari_store::StoreError),
    /// A sealed secret in the store could not be opened or read.
    #[error("ACME store: {0}")]
    Secret(String),
    /// Leadership passed to another instance while ordering.
    #[error("no longer the ACME leader; the order was abandoned")]
    NotLeader,
}

/// HTTP-01 tokens being validated right now: token → key authorization, in
/// memory, and in a cluster also in the store (see [`Challenges::share`]).
#[derive(Debug, Default, Clone)]
pub struct Challenges(Arc<ChallengesInner>);

#[derive(Debug, Default)]
struct ChallengesInner {
    open: RwLock<HashMap<String, String>>,
    store: OnceLock<Store>,
}

/// Tokens are base64url (43 characters from Let's Encrypt and pebble);
/// anything longer is not looked up in the store.
const MAX_TOKEN: usize = 256;

impl Challenges {
    /// The key authorization for `token`, while its challenge is open in
    /// this instance.
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    /// The key authorization for `token`: from this instance's memory, else
    /// (in a cluster) from the store, where the leader publishes its own.
    pub async fn lookup(&self, token: &str) -> Option<String> {
        if let Some(k) = self.get(token) {
            return Some(k);
        }
        let store = self.0.store.get()?;
        if token.is_empty() || token.len() > MAX_TOKEN {
            return None;
        }
        match store.acme_challenge(token).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "ACME challenge lookup in the store failed");
                None
            }
        }
    }

    /// Look tokens up in `store` too when they are not in memory (set once,
    /// when the ACME client shares its state through the store).
    pub fn share(&self, store: Store) {
        let _ = self.0.store.set(store);
    }

    fn set(&self, token: String, key_authorization: String) {
        self.0
            .open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, key_authorization);
    }

    fn clear(&self) {
        self.0
            .open
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// A self-signed certificate and key (PEM) for `domains`, served until the
/// first real one arrives.
pub fn placeholder(domains: &[String]) -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(domains.to_vec())?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Seconds until the certificate in `pem` expires (negative when expired),
/// or `None` when it cannot be read.
fn expires_in(pem: &[u8]) -> Option<i64> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = p.parse_x509().ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(not_after - now)
}

fn cache_err(path: &Path, e: impl std::fmt::Display) -> AcmeError {
    AcmeError::Cache {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename), with
/// mode 0600 for secrets.
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), AcmeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| cache_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| cache_err(&tmp, e))?;
    f.sync_all().map_err(|e| cache_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| cache_err(path, e))
}

/// The certificate and its key as sealed in the store.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCertificate {
    /// PEM chain, leaf first.
    cert: String,
    /// PEM private key.
    key: String,
}

/// A cluster's shared ACME state: the store and the key sealing it.
#[derive(Clone)]
pub struct SharedAcme {
    /// The store every instance reads.
    pub store: Store,
    /// Seals the account and the certificate (`acme.key_env`).
    pub key: AcmeKey,
}

impl std::fmt::Debug for SharedAcme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAcme").finish_non_exhaustive()
    }
}

/// The ACME client of one instance.
pub struct Acme {
    config: AcmeConfig,
    challenges: Challenges,
    certificates: Arc<Certificates>,
    shared: Option<SharedAcme>,
}

impl Acme {
    /// An ACME client that keeps `certificates` current from files in
    /// `cache_dir` (one instance).
    pub fn new(
        config: AcmeConfig,
        challenges: Challenges,
        certificates: Arc<Certificates>,
    ) -> Self {
        Self {
            config,
            challenges,
            certificates,
            shared: None,
        }
    }

    /// The same client sharing its account, certificate and challenges
    /// through `shared` (a cluster): only the leader orders; every
    /// instance serves the stored certificate.
    pub fn shared(mut self, shared: SharedAcme) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The store's name for the certificate of these domains (also its
    /// associated data when sealed).
    pub fn certificate_name(config: &AcmeConfig) -> String {
        format!("certificate {}", config.domains.join(","))
    }

    fn account_name(&self) -> String {
        format!("account {}", self.config.directory)
    }

    /// Whether the cached certificate is missing or expires within `renew_before`.
    pub fn due(&self) -> bool {
        let path = self.config.cache_dir.join("cert.pem");
        self.due_pem(std::fs::read(&path).ok().as_deref())
    }

    fn due_pem(&self, pem: Option<&[u8]>) -> bool {
        match pem.and_then(expires_in) {
            Some(left) => left < self.config.renew_before.as_secs() as i64,
            None => true,
        }
    }

    /// Issue or renew whenever due, until `stop` turns true.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        match self.shared.clone() {
            Some(shared) => self.run_shared(shared, stop).await,
            None => self.run_files(stop).await,
        }
    }

    async fn run_files(self, mut stop: watch::Receiver<bool>) {
        loop {
            let wait = if self.due() {
                // Shutdown does not wait for an order in flight.
                let issued = tokio::select! {
                    r = self.issue() => r,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match issued {
                    Ok(()) => self.config.check_interval,
                    Err(e) => {
                        tracing::error!(error = %e, "certificate issuance failed; retrying");
                        RETRY_AFTER_FAILURE.min(self.config.check_interval)
                    }
                }
            } else {
                self.config.check_interval
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// A cluster: contend for the `acme` lock; every [`FOLLOW_EVERY`] load
    /// a new stored certificate; while leading, order when due (at once on
    /// taking over, then every `check_interval`).
    async fn run_shared(self, shared: SharedAcme, stop: watch::Receiver<bool>) {
        use orinari_status::leader;
        self.challenges.share(shared.store.clone());
        self.certificates.follow_store();
        let lock = shared
            .store
            .leader_lock(LEADER_ROLE, leader::grace(orinari_status::ELECTION_EVERY));
        let (leads_tx, leads) = watch::channel(false);
        let election = leader::run(
            "acme",
            lock,
            leads_tx,
            orinari_status::ELECTION_EVERY,
            stop.clone(),
        );
        tokio::join!(election, self.lead_and_follow(&shared, leads, stop));
    }

    async fn lead_and_follow(
        &self,
        shared: &SharedAcme,
        mut leads: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut seen: Option<i64> = None;
        let mut next_check: Option<tokio::time::Instant> = None;
        let mut election_open = true;
        loop {
            self.follow(shared, &mut seen).await;
            if *leads.borrow_and_update() {
                let now = tokio::time::Instant::now();
                if next_check.is_none_or(|at| now >= at) {
                    let wait = tokio::select! {
                        w = self.check_shared(shared, leads.clone()) => w,
                        _ = stop.wait_for(|s| *s) => return,
                    };
                    next_check = Some(tokio::time::Instant::now() + wait);
                    // What was just issued, served here at once.
                    self.follow(shared, &mut seen).await;
                }
            } else {
                // Not leading: a new leader checks at once when it takes over.
                next_check = None;
            }
            tokio::select! {
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
                r = leads.changed(), if election_open => election_open = r.is_ok(),
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// The leader's check: order when the stored certificate is missing or
    /// due; returns how long until the next check.
    async fn check_shared(
        &self,
        shared: &SharedAcme,
        mut leads: watch::Receiver<bool>,
    ) -> Duration {
        let retry = RETRY_AFTER_FAILURE.min(self.config.check_interval);
        let due = match self.stored_certificate(shared).await {
            Ok(stored) => self.due_pem(stored.as_ref().map(|c| c.cert.as_bytes())),
            Err(e) => {
                // A certificate that cannot be opened (a different key on
                // this instance) is never overwritten by this leader.
                tracing::error!(error = %e, "the stored certificate cannot be read; not renewing");
                return retry;
            }
        };
        if !due {
            return self.config.check_interval;
        }
        let issued = tokio::select! {
            r = self.issue_shared(shared) => r,
            _ = leads.wait_for(|l| !*l) => Err(AcmeError::NotLeader),
        };
        self.withdraw_challenges(shared).await;
        match issued {
            Ok(()) => self.config.check_interval,
            Err(e) => {
                tracing::error!(error = %e, "certificate issuance failed; retrying");
                retry
            }
        }
    }

    /// Load the stored certificate when its version changed since `seen`.
    async fn follow(&self, shared: &SharedAcme, seen: &mut Option<i64>) {
        let name = Self::certificate_name(&self.config);
        let version = match shared.store.acme_secret_version(&name).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the certificate's version from the store");
                return;
            }
        };
        if version.is_none() || version == *seen {
            return;
        }
        let loaded = match self.stored_certificate(shared).await {
            Ok(Some(c)) => self
                .certificates
                .install(c.cert.as_bytes(), c.key.as_bytes())
                .map_err(|e| e.to_string()),
            Ok(None) => return,
            // The store did not answer: try again at the next poll.
            Err(AcmeError::Store(e)) => {
                tracing::warn!(error = %e, "cannot read the certificate from the store");
                return;
            }
            Err(e) => Err(e.to_string()),
        };
        // Tried once per version: a certificate that does not open or load
        // is reported once, not at every poll.
        *seen = version;
        match loaded {
            Ok(()) => tracing::info!(version, "TLS certificate loaded from the store"),
            Err(e) => {
                tracing::error!(error = %e, "the stored certificate did not load; keeping the current one")
            }
        }
    }

    async fn stored_certificate(
        &self,
        shared: &SharedAcme,
    ) -> Result<Option<StoredCertificate>, AcmeError> {
        let name = Self::certificate_name(&self.config);
        let Some(secret) = shared.store.acme_secret(&name).await? else {
            return Ok(None);
        };
        let plain = shared
            .key
            .open(&name, &secret.sealed)
            .map_err(AcmeError::Secret)?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| AcmeError::Secret(format!("{name}: {e}")))
    }

    async fn seal_put(
        &self,
        shared: &SharedAcme,
        name: &str,
        plain: &[u8],
    ) -> Result<i64, AcmeError> {
        let sealed = shared.key.seal(name, plain).map_err(AcmeError::Secret)?;
        Ok(shared.store.put_acme_secret(name, &sealed).await?)
    }

    async fn withdraw_challenges(&self, shared: &SharedAcme) {
        let tokens: Vec<String> = self
            .challenges
            .0
            .open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        self.challenges.clear();
        if let Err(e) = shared.store.delete_acme_challenges(&tokens).await {
            tracing::warn!(error = %e, "cannot withdraw ACME challenges from the store");
        }
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, AcmeError> {
        Ok(match &self.config.directory_ca {
            Some(ca) => Account::builder_with_root(ca)?,
            None => Account::builder()?,
        })
    }

    async fn create_account(&self) -> Result<(Account, AccountCredentials), AcmeError> {
        let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let created = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await?;
        tracing::info!(directory = %self.config.directory, "ACME account created");
        Ok(created)
    }

    async fn account(&self) -> Result<Account, AcmeError> {
        let path = self.config.cache_dir.join("account.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let creds: AccountCredentials =
                serde_json::from_str(&text).map_err(|e| cache_err(&path, e))?;
            return Ok(self.builder()?.from_credentials(creds).await?);
        }
        let (account, creds) = self.create_account().await?;
        let json = serde_json::to_vec(&creds).map_err(|e| cache_err(&path, e))?;
        write_file(&path, &json, true)?;
        Ok(account)
    }

    async fn shared_account(&self, shared: &SharedAcme) -> Result<Account, AcmeError> {
        let name = self.account_name();
        if let Some(secret) = shared.store.acme_secret(&name).await? {
            let plain = shared
                .key
                .open(&name, &secret.sealed)
                .map_err(AcmeError::Secret)?;
            let creds: AccountCredentials = serde_json::from_slice(&plain)
                .map_err(|e| AcmeError::Secret(format!("{name}: {e}")))?;
            return Ok(self.builder()?.from_credentials(creds).await?);
        }
        let (account, creds) = self.create_account().await?;
        let json = serde_json::to_vec(&creds).map_err(|e| AcmeError::Secret(e.to_string()))?;
        self.seal_put(shared, &name, &json).await?;
        Ok(account)
    }

    /// Order a certificate for the configured names and load it.
    pub async fn issue(&self) -> Result<(), AcmeError> {
        let dir = &self.config.cache_dir;
        std::fs::create_dir_all(dir).map_err(|e| cache_err(dir, e))?;
        let account = self.account().await?;
        let ordered = self.order(&account, None).await;
        self.challenges.clear();
        let (chain_pem, key_pem) = ordered?;
        // Key first: a reload that sees the new certificate with the old key
        // fails the key check and keeps the old pair until both are in place.
        write_file(&dir.join("key.pem"), key_pem.as_bytes(), true)?;
        write_file(&dir.join("cert.pem"), chain_pem.as_bytes(), false)?;
        if let Err(e) = self.certificates.reload() {
            tracing::error!(error = %e, "the issued certificate did not load");
        }
        tracing::info!(domains = ?self.config.domains, "certificate issued");
        Ok(())
    }

    /// The leader's order: the pair goes into the store, sealed, and every
    /// instance (this one included) loads it from there.
    async fn issue_shared(&self, shared: &SharedAcme) -> Result<(), AcmeError> {
        let account = self.shared_account(shared).await?;
        let (cert, key) = self.order(&account, Some(shared)).await?;
        let plain = serde_json::to_vec(&StoredCertificate { cert, key })
            .map_err(|e| AcmeError::Secret(e.to_string()))?;
        let version = self
            .seal_put(shared, &Self::certificate_name(&self.config), &plain)
            .await?;
        tracing::info!(domains = ?self.config.domains, version, "certificate issued and stored");
        Ok(())
    }

    /// Place an order, answer its HTTP-01 challenges (in memory, and in the
    /// store when shared) and return the chain and key (PEM).
    async fn order(
        &self,
        account: &Account,
        shared: Option<&SharedAcme>,
    ) -> Result<(String, String), AcmeError> {
        let ids: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        tracing::info!(domains = ?self.config.domains, "ACME order placed");
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::Order("offered no http-01 challenge".into()))?;
            let token = challenge.token.clone();
            let key_authorization = challenge.key_authorization().as_str().to_string();
            self.challenges
                .set(token.clone(), key_authorization.clone());
            if let Some(shared) = shared {
                let ttl = i64::try_from(CHALLENGE_TTL.as_millis()).unwrap_or(i64::MAX);
                shared
                    .store
                    .put_acme_challenge(&token, &key_authorization, orinari_store::now_ms() + ttl)
                    .await?;
            }
            challenge.set_ready().await?;
        }
        let status = order.poll_ready(&RetryPolicy::default()).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Order(format!("{status:?}")));
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&RetryPolicy::default()).await?;
        Ok((chain_pem, key_pem))
    }
}
