//! Uptime monitoring and the public status model, compatible with Atlassian
//! Statuspage's public API (v2): components and groups, the page indicator,
//! incidents and scheduled maintenances with their lifecycles and updates,
//! probes that drive component status, time-based uptime, the Statuspage
//! JSON, an Atom feed, SVG badges, webhook notifications (operators' and
//! visitors' subscriptions), and the election of the one instance that runs
//! the singleton jobs when several share a PostgreSQL store.
//!
//! This crate never renders HTML: the page lives in `orinari-server`, which
//! reads a [`Snapshot`] and subscribes to its changes for live updates.

pub mod alerts;
mod badge;
mod clock;
mod feed;
pub mod leader;
pub mod model;
mod notify;
pub mod outbound;
pub mod probe;
mod service;
pub mod smtp;
pub mod statuspage;
pub mod tls;
pub mod uptime;
pub mod webhooks;

pub use badge::{badge, colour_of};
pub use clock::PageClock;
pub use feed::atom;
pub use leader::ELECTION_EVERY;
pub use notify::{Notifier, Operators, Webhook, sign};
pub use service::{
    Component, IncidentInput, MaintenanceInput, PageInfo, Snapshot, StatusReload, StatusService,
    UpdateInput,
};

/// Errors at the status boundary.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// A field of a request or of the configuration is wrong.
    #[error("`{field}`: {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// No incident or maintenance with this id.
    #[error("no {kind} `{id}`")]
    NotFound {
        /// `incident` or `maintenance`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A notification could not be delivered (e.g. the SMTP relay refused).
    #[error("could not deliver: {0}")]
    Delivery(String),
    /// Too many requests of this kind; try again after this many seconds.
    #[error("too many subscription requests; try again in {retry_after_s} s")]
    Limited {
        /// Seconds to wait.
        retry_after_s: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] orinari_store::StoreError),
}

impl StatusError {
    /// A field error.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A new 12-character lowercase base36 id, like Statuspage's.
pub fn new_id() -> String {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::from_os_rng();
    (0..12)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A 12-character base36 id derived from `seed` (FNV-1a): the same seed gives
/// the same id on every instance, so an automatic update written by two
/// instances at once is stored once (the second insert conflicts).
pub fn derived_id(seed: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..12)
        .map(|_| {
            let c = ALPHABET[(h % 36) as usize];
            h /= 36;
            char::from(c)
        })
        .collect()
}
