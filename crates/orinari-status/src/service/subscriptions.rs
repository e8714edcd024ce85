//! Email subscriptions of visitors: double opt-in (a confirmation link is
//! mailed, only the token's SHA-256 is stored), confirmation, and
//! unsubscribing by the token in every notification (email or webhook).

use std::time::Duration;

use super::StatusService;
use crate::{StatusError, new_id};

impl StatusService {
    /// Whether visitors can subscribe by email (`[status] smtp` is set).
    pub fn emails_enabled(&self) -> bool {
        self.notifier.smtp().is_some()
    }

    /// A visitor subscribes `email` to every component, or to `component`:
    /// the subscription is stored unconfirmed and a confirmation link is
    /// mailed (double opt-in). A second request for the same address within
    /// 10 minutes sends nothing more, so the form cannot be used to flood an
    /// inbox.
    pub async fn subscribe_email(
        &self,
        email: &str,
        component: Option<&str>,
        now: i64,
    ) -> Result<(), StatusError> {
        let Some(smtp) = self.notifier.smtp() else {
            return Err(StatusError::invalid(
                "email",
                "email notifications are not enabled on this page",
            ));
        };
        let email = email.trim().to_ascii_lowercase();
        if !crate::smtp::valid_address(&email) {
            return Err(StatusError::invalid(
                "email",
                format!("`{email}` is not an email address like name@example.org"),
            ));
        }
        let snap = self.snapshot();
        let components = match component.filter(|c| !c.is_empty()) {
            None => Vec::new(),
            Some(c) if snap.component(c).is_some() => vec![c.to_string()],
            Some(c) => {
                return Err(StatusError::invalid(
                    "component",
                    format!("no component `{c}`"),
                ));
            }
        };
        if self
            .store
            .pending_since(&email)
            .await?
            .is_some_and(|at| now - at < 600_000)
        {
            return Ok(());
        }
        let token = format!("{}{}{}", new_id(), new_id(), new_id());
        self.store
            .subscribe(&orinari_store::NewSubscription {
                id: new_id(),
                email: email.clone(),
                components,
                confirm_hash: token_hash(&token),
                unsubscribe_token: format!("{}{}{}", new_id(), new_id(), new_id()),
                at: now,
            })
            .await?;
        let url = &self.page.url;
        let body = format!(
            "Someone (hopefully you) asked to receive status notifications of {} at this address.\n\n\
             Confirm: {url}/subscriptions/confirm?token={token}\n\n\
             If it was not you, ignore this message: nothing will be sent.\n",
            self.page.name
        );
        let subject = format!("[{}] Confirm your subscription", self.page.name);
        crate::smtp::send(
            &smtp.relay,
            &crate::smtp::Mail {
                from: &smtp.from,
                to: &email,
                subject: &subject,
                body: &body,
            },
            Duration::from_secs(10),
        )
        .await
        .map_err(StatusError::Delivery)
    }

    /// Confirm a subscription by the token from its email; false when the
    /// token is unknown or already used.
    pub async fn confirm(&self, token: &str, now: i64) -> Result<bool, StatusError> {
        Ok(self
            .store
            .confirm_subscription(&token_hash(token), now)
            .await?)
    }

    /// End a subscription (email or webhook) by the token in every
    /// notification; false when unknown.
    pub async fn unsubscribe(&self, token: &str, now: i64) -> Result<bool, StatusError> {
        if token.is_empty() {
            return Ok(false);
        }
        if self.store.unsubscribe(token, now).await? {
            return Ok(true);
        }
        Ok(self.store.unsubscribe_webhook(token, now).await?)
    }
}

/// SHA-256 (hex) of a subscription token: only this is stored.
fn token_hash(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
