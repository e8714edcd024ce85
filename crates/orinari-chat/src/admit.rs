//! The admission steps every request of the chat domain takes, whatever it
//! asks for (an answer, vectors): the model the caller may use, the input
//! limit, the token reservation and the model's queue permit. Each refuses
//! with its own [`ChatError`].

use std::time::{Duration, Instant};

use orinari_api::ApiError;
use orinari_limits::{Caller, Source, Window};

use crate::answer::Held;
use crate::{Chat, ChatError, now_ms};

/// 403 `model_not_allowed` when the caller's key may not use `model`.
pub(crate) fn allowed(caller: &Caller, model: &str) -> Result<(), ChatError> {
    if caller.may_use(model) {
        return Ok(());
    }
    Err(ChatError::Refused(
        ApiError::forbidden(
            format!("This API key may not use the model `{model}`."),
            "model_not_allowed",
        )
        .with_param("model"),
    ))
}

/// 400 `input_too_long` naming `param` when `chars` is over the limit;
/// `what` says what was counted (`The messages`).
pub(crate) fn within(chars: usize, limit: usize, param: &str, what: &str) -> Result<(), ChatError> {
    if chars <= limit {
        return Ok(());
    }
    Err(ChatError::Refused(
        ApiError::invalid(
            param,
            format!("{what} total {chars} characters, over the limit of {limit}."),
        )
        .with_code("input_too_long"),
    ))
}

impl Chat {
    /// Reserve `estimate` tokens against the caller's budget (429 when it
    /// cannot take them now); what is held until the request ends, and the
    /// token limit after the reservation.
    pub(crate) async fn reserve(
        &self,
        caller: &Caller,
        model: &str,
        estimate: u32,
    ) -> Result<(Held, Window), ChatError> {
        let metrics = &self.metrics;
        let limiter = self.edge.limiter();
        let reserved = limiter
            .reserve(&caller.subject, caller.policy, estimate)
            .await;
        if reserved.source == Source::Local && !limiter.healthy() {
            metrics.limits.local_fallbacks.inc();
        }
        if reserved.refused {
            metrics.limits.rejected("tokens");
            return Err(ChatError::Tokens {
                estimate,
                policy: caller.policy,
                retry_after: reserved.retry_after,
                window: reserved.tokens,
            });
        }
        metrics.analytics.model_request(model, now_ms());
        let held = Held {
            limiter: limiter.clone(),
            subject: caller.subject.clone(),
            policy: caller.policy,
            estimate,
            permit: None,
        };
        Ok((held, reserved.tokens))
    }

    /// A slot in `model`'s fair admission queue, when it has one (503 when
    /// full or after the queue timeout, and the reservation comes back);
    /// how long the request waited.
    pub(crate) async fn queue(
        &self,
        caller: &Caller,
        model: &str,
        held: &mut Held,
        window: Window,
    ) -> Result<Duration, ChatError> {
        let Some(queue) = self.edge.queue(model) else {
            return Ok(Duration::ZERO);
        };
        let metrics = &self.metrics;
        let waited = Instant::now();
        let depth = &metrics.limits.queue_depth;
        depth.set(self.edge.queue_depth() as i64 + 1);
        let acquired = queue.acquire(&caller.ticket()).await;
        depth.set(self.edge.queue_depth() as i64);
        match acquired {
            Ok(permit) => {
                held.permit = Some(permit);
                Ok(waited.elapsed())
            }
            Err(refused) => {
                held.limiter
                    .settle(&caller.subject, caller.policy, held.estimate, 0)
                    .await;
                metrics.limits.rejected(match refused {
                    orinari_limits::queue::Refused::Full => "queue_full",
                    orinari_limits::queue::Refused::Timeout => "queue_timeout",
                });
                Err(ChatError::Queue { refused, window })
            }
        }
    }
}
