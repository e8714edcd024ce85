//! `Chat::answer` against a scripted backend: the steps refuse in order,
//! an `Answer` settles its reservation from the real usage and frees its
//! queue slot when dropped, and a model served by one backend of its own
//! records the per-model metrics (a pool records its own).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use orinari_api::{ChatMessage, Role, ValidationLimits};
use orinari_chat::{Chat, ChatError, ChatRequest, ServedModel};
use orinari_config::admission::AdmissionConfig;
use orinari_limits::{Caller, Edge};
use orinari_models::{
    BoxFuture, Event, EventResult, Events, FinishReason, Generation, ModelBackend, ModelError,
    ModelInfo, Sampling, Usage,
};
use orinari_telemetry::Metrics;

/// Answers every request with the same events.
struct Scripted {
    info: ModelInfo,
    events: Vec<EventResult>,
}

impl ModelBackend for Scripted {
    fn info(&self) -> &ModelInfo {
        &self.info
    }
    fn start(
        &self,
        _: orinari_models::GenerateRequest,
    ) -> BoxFuture<'_, Result<Generation, ModelError>> {
        let events = self.events.clone();
        Box::pin(async move {
            Ok(Generation {
                prompt_tokens: 3,
                events: Events::ready(events),
            })
        })
    }
    fn ready(&self) -> bool {
        true
    }
}

fn hello() -> Vec<EventResult> {
    vec![
        Ok(Event::Delta("Hel".into())),
        Ok(Event::Delta("lo".into())),
        Ok(Event::Done {
            finish_reason: FinishReason::Stop,
            usage: Usage {
                prompt_tokens: 3,
                completion_tokens: 2,
            },
        }),
    ]
}

fn chat(tokens_per_minute: u32, queue_depth: usize) -> (Chat, Arc<Metrics>) {
    let mut config = AdmissionConfig::default();
    config.limits.tokens_per_minute = tokens_per_minute;
    config.limits.queue_depth = queue_depth;
    let edge = Arc::new(Edge::new(config, &[("m".to_string(), Some(1))]));
    let metrics = Arc::new(Metrics::new());
    let backend = Arc::new(Scripted {
        info: ModelInfo {
            context_window: 2048,
            owned_by: "test".into(),
        },
        events: hello(),
    });
    let chat = Chat::new(
        vec![ServedModel {
            name: "m".into(),
            backend,
        }],
        edge,
        ValidationLimits {
            max_input_chars: 1000,
        },
        metrics.clone(),
    );
    (chat, metrics)
}

fn caller(chat: &Chat) -> Caller {
    Caller::anonymous("ip:test".into(), &chat.edge().config().limits)
}

/// About `size / 4 + max_tokens` tokens.
fn ask(model: &str, size: usize, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![ChatMessage::text(Role::User, "hi")],
        sampling: Sampling {
            max_tokens: Some(max_tokens),
            ..Sampling::default()
        },
        stream: false,
        options: Default::default(),
        size,
        fields: None,
        sources: None,
        cache: None,
    }
}

#[tokio::test]
async fn an_answer_settles_its_reservation_and_frees_its_slot() {
    let (chat, _) = chat(1000, 4);
    let c = caller(&chat);
    // 100 + 500 reserved of 1,000.
    let answer = chat.answer(&c, ask("m", 400, 500)).await.unwrap();
    assert!(answer.tokens().remaining <= 400, "{:?}", answer.tokens());
    let queue = chat.edge().queue("m").unwrap();
    assert_eq!(queue.running(), 1, "the answer holds the model's slot");
    let whole = answer.collect().await.unwrap();
    assert_eq!(whole.text, "Hello");
    assert_eq!(
        queue.running(),
        0,
        "the slot is free once the answer is gone"
    );
    // Settled with the 5 tokens used: another 900 fit at once.
    let again = chat.answer(&c, ask("m", 400, 800)).await.unwrap();
    assert!(again.tokens().remaining < 200, "{:?}", again.tokens());
}

#[tokio::test]
async fn each_step_refuses_in_order() {
    let (chat, metrics) = chat(1000, 0);
    let mut scoped = caller(&chat);
    scoped.allowed_models = Some(Arc::from(vec!["other".to_string()]));
    match chat.answer(&scoped, ask("m", 4, 1)).await {
        Err(ChatError::Refused(e)) => assert_eq!(e.code, Some("model_not_allowed")),
        other => panic!("{other:?}"),
    }
    let c = caller(&chat);
    match chat.answer(&c, ask("gpt-9", 4, 1)).await {
        Err(ChatError::Refused(e)) => assert_eq!(e.code, Some("model_not_found")),
        other => panic!("{other:?}"),
    }
    let mut long = ask("m", 4, 1);
    long.messages[0].content = "x".repeat(1001);
    match chat.answer(&c, long).await {
        Err(ChatError::Refused(e)) => assert_eq!(e.code, Some("input_too_long")),
        other => panic!("{other:?}"),
    }
    match chat.answer(&c, ask("m", 4, 1500)).await {
        Err(ChatError::Tokens { estimate, .. }) => assert_eq!(estimate, 1501),
        other => panic!("{other:?}"),
    }
    // One running, no room to wait: shed, and the reservation comes back.
    let first = chat.answer(&c, ask("m", 4, 100)).await.unwrap();
    match chat.answer(&c, ask("m", 4, 100)).await {
        Err(ChatError::Queue { .. }) => {}
        other => panic!("{other:?}"),
    }
    let refunded = chat
        .edge()
        .limiter()
        .reserve(&c.subject, c.policy, 890)
        .await;
    assert!(!refunded.refused, "{refunded:?}");
    drop(first);
    let text = metrics.render();
    assert!(
        text.contains(r#"orinari_ratelimit_rejections_total{kind="tokens"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"orinari_ratelimit_rejections_total{kind="queue_full"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_single_backend_records_its_model_metrics_and_a_pool_does_not() {
    let (chat, metrics) = chat(100_000, 4);
    let c = caller(&chat);
    chat.answer(&c, ask("m", 4, 8))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    // Dropped unread: the client went away.
    drop(chat.answer(&c, ask("m", 4, 8)).await.unwrap());
    let text = metrics.render();
    for line in [
        r#"orinari_model_requests_total{model="m",backend="local",outcome="success"} 1"#,
        r#"orinari_model_requests_total{model="m",backend="local",outcome="cancelled"} 1"#,
        r#"orinari_model_time_to_first_token_seconds_count{model="m",backend="local"} 1"#,
        r#"orinari_model_tokens_total{model="m",backend="local",kind="prompt"} 3"#,
        r#"orinari_model_tokens_total{model="m",backend="local",kind="completion"} 2"#,
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    // Served as a pool, the same model records nothing here.
    let pooled_metrics = Arc::new(Metrics::new());
    let served: Vec<ServedModel> = chat.models().cloned().collect();
    let pooled = Chat::new(
        Vec::new(),
        chat.edge().clone(),
        chat.limits(),
        pooled_metrics.clone(),
    )
    .serving(served, |_| true);
    pooled
        .answer(&c, ask("m", 4, 8))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(!pooled_metrics.render().contains("backend=\"local\""));
}
