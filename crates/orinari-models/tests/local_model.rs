//! The embedded model end to end: load the real GGUF, generate, stop, cancel.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::{Duration, Instant};

use orinari_models::local::{EngineOptions, LocalConfig, LocalModel, default_model_path};
use orinari_models::{
    Event, FinishReason, GenerateRequest, Message, ModelBackend, ModelError, Sampling,
};

fn model(max_active: usize, context: Option<usize>) -> LocalModel {
    LocalModel::load(&LocalConfig {
        path: default_model_path(),
        context_size: context,
        max_active,
        queue_depth: 4,
        requantize: true,
    })
    .expect("run scripts/fetch-model.sh first")
}

fn ask(text: &str, sampling: Sampling) -> GenerateRequest {
    GenerateRequest {
        messages: vec![Message::text("user", text)],
        sampling,
        stream: true,
        ..GenerateRequest::default()
    }
}

async fn collect(m: &LocalModel, req: GenerateRequest) -> (String, FinishReason, u32, u32) {
    let g = m.start(req).await.expect("admitted");
    let prompt_tokens = g.prompt_tokens;
    let a = g.collect().await.expect("a whole answer");
    assert_eq!(a.usage.prompt_tokens, prompt_tokens);
    (
        a.text,
        a.finish_reason,
        a.usage.prompt_tokens,
        a.usage.completion_tokens,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_answer_is_deterministic() {
    let m = model(2, None);
    let greedy = Sampling {
        temperature: 0.0,
        max_tokens: Some(40),
        ..Sampling::default()
    };
    let t0 = Instant::now();
    let (a, reason, prompt, completion) =
        collect(&m, ask("What is the capital of France?", greedy.clone())).await;
    eprintln!("answer {a:?} ({completion} tokens in {:?})", t0.elapsed());
    assert!(!a.trim().is_empty());
    assert!(prompt > 10);
    assert!(completion >= 1);
    assert!(matches!(reason, FinishReason::Stop | FinishReason::Length));
    let (b, ..) = collect(&m, ask("What is the capital of France?", greedy)).await;
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sampling_repeats_and_max_tokens_bounds() {
    let m = model(2, None);
    let s = |seed| Sampling {
        temperature: 1.0,
        top_p: 0.9,
        seed: Some(seed),
        max_tokens: Some(12),
        stop: vec![],
    };
    let (a, ra, _, ca) = collect(&m, ask("Tell me a story.", s(7))).await;
    let (b, _, _, cb) = collect(&m, ask("Tell me a story.", s(7))).await;
    assert_eq!((a.clone(), ca), (b, cb));
    assert!(ca <= 12);
    if ca == 12 {
        assert_eq!(ra, FinishReason::Length);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_overflow_is_refused_before_generation() {
    let m = model(1, Some(64));
    let long = "word ".repeat(200);
    let err = m.start(ask(&long, Sampling::default())).await.unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::ContextOverflow {
                context_window: 64,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_generation_frees_the_engine() {
    let m = model(1, None);
    let endless = Sampling {
        temperature: 0.0,
        max_tokens: Some(2000),
        ..Sampling::default()
    };
    let mut g = m
        .start(ask("Count from one to a thousand.", endless))
        .await
        .unwrap();
    let first = g.events.recv().await;
    assert!(matches!(first, Some(Ok(Event::Delta(_)))));
    drop(g);
    // With one active slot, the next request can only be served if the
    // cancelled one really stopped.
    let quick = Sampling {
        temperature: 0.0,
        max_tokens: Some(3),
        ..Sampling::default()
    };
    let r = tokio::time::timeout(Duration::from_secs(20), collect(&m, ask("Hi", quick))).await;
    assert!(r.is_ok(), "the engine kept generating for a dropped client");
}

fn conversation(messages: &[Message], max_tokens: u32) -> GenerateRequest {
    GenerateRequest {
        messages: messages.to_vec(),
        sampling: Sampling {
            temperature: 0.0,
            max_tokens: Some(max_tokens),
            ..Sampling::default()
        },
        stream: true,
        ..GenerateRequest::default()
    }
}

fn with_prefix_cache(mib: usize) -> LocalModel {
    LocalModel::load_with(
        &LocalConfig {
            path: default_model_path(),
            context_size: Some(1024),
            max_active: 1,
            queue_depth: 4,
            requantize: true,
        },
        &EngineOptions {
            prefix_cache_mib: mib,
            ..EngineOptions::default()
        },
    )
    .expect("run scripts/fetch-model.sh first")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_turn_reuses_the_cached_prefix_and_answers_the_same() {
    let cached = with_prefix_cache(64);
    let cold = with_prefix_cache(0);
    // A first message of a few hundred tokens: several prefill chunks (128
    // tokens), so reuse starts inside a chunk.
    let text = "The tide came in over the flat sand, and the gulls rose from the pier. ".repeat(20);
    let mut msgs = vec![Message::text(
        "user",
        format!("{text}\nWhat rose from the pier?"),
    )];
    let mut prompts: Vec<u32> = Vec::new();
    let mut reused_so_far = 0;
    for (turn, q) in ["And what came in?", "Over what?", "Thanks!"]
        .into_iter()
        .enumerate()
    {
        let (a, _, prompt, _) = collect(&cached, conversation(&msgs, 16)).await;
        let (b, ..) = collect(&cold, conversation(&msgs, 16)).await;
        // Exact reuse: the same greedy answer as without the cache.
        assert_eq!(a, b, "the prefix cache changed a greedy answer");
        let reused = cached.prefix_cache_stats().reused_tokens - reused_so_far;
        reused_so_far += reused;
        if let Some(&before) = prompts.last() {
            // Only the new turn is computed: the previous prompt and the
            // answer generated to it (sent back as history) come from the
            // cache; what is left is the end of that answer's turn and the
            // question, with the chat template's markers.
            let computed = u64::from(prompt) - reused;
            assert!(
                reused > u64::from(before) && computed <= 40,
                "turn {}: {reused} of {prompt} prompt tokens reused (previous prompt {before})",
                turn + 1
            );
        }
        prompts.push(prompt);
        msgs.push(Message::text("assistant", a));
        msgs.push(Message::text("user", q));
    }
    // The same request again is answered the same, from the cache.
    let (a, ..) = collect(&cached, conversation(&msgs, 16)).await;
    let (b, ..) = collect(&cached, conversation(&msgs, 16)).await;
    let (c, ..) = collect(&cold, conversation(&msgs, 16)).await;
    assert_eq!((&a, &b), (&c, &c));
    let s = cached.prefix_cache_stats();
    assert!(s.hits >= 4, "{s:?}");
    assert!(s.bytes > 0 && s.bytes <= 64 << 20, "{s:?}");
    let c = cold.prefix_cache_stats();
    assert_eq!((c.hits, c.bytes), (0, 0), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_cache_stays_within_its_budget() {
    // One MiB holds about 22 positions of this model: no finished request
    // (its ~130 positions plus room for the next turn) fits, so nothing is
    // kept and nothing is reused.
    let m = with_prefix_cache(1);
    let msgs = vec![Message::text("user", "Say hello. ".repeat(60))];
    collect(&m, conversation(&msgs, 4)).await;
    collect(&m, conversation(&msgs, 4)).await;
    let s = m.prefix_cache_stats();
    assert!(s.bytes <= 1 << 20, "{s:?}");
    assert_eq!(s.hits, 0, "{s:?}");
}

fn engine(max_active: usize, batch: bool) -> LocalModel {
    LocalModel::load_with(
        &LocalConfig {
            path: default_model_path(),
            context_size: Some(1024),
            max_active,
            queue_depth: 4,
            requantize: true,
        },
        &EngineOptions {
            batch,
            ..EngineOptions::default()
        },
    )
    .expect("run scripts/fetch-model.sh first")
}

/// Different prompts (one of several prefill chunks, one sampled with a
/// seed) that run together.
fn mixed_requests() -> Vec<GenerateRequest> {
    let greedy = |n| Sampling {
        temperature: 0.0,
        max_tokens: Some(n),
        ..Sampling::default()
    };
    let long = format!(
        "{}\nWhat did the gulls do?",
        "The tide came in over the flat sand, and the gulls rose from the pier. ".repeat(20)
    );
    vec![
        ask("What is the capital of France?", greedy(24)),
        ask("Write a haiku about rain.", greedy(32)),
        ask(&long, greedy(20)),
        ask(
            "Tell me a story.",
            Sampling {
                temperature: 0.8,
                top_p: 0.9,
                seed: Some(11),
                max_tokens: Some(28),
                stop: vec![],
            },
        ),
        ask("List three colours.", greedy(16)),
    ]
}

async fn concurrently(
    m: &LocalModel,
    reqs: Vec<GenerateRequest>,
) -> Vec<(String, FinishReason, u32, u32)> {
    futures::future::join_all(reqs.into_iter().map(|r| collect(m, r))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_answers_equal_answers_run_one_at_a_time() {
    let m = engine(8, true);
    let mut alone = Vec::new();
    for r in mixed_requests() {
        alone.push(collect(&m, r).await);
    }
    assert_eq!(m.largest_batch(), 0, "one at a time never batches");
    let together = concurrently(&m, mixed_requests()).await;
    assert_eq!(together, alone, "batching changed an answer");
    assert!(
        m.largest_batch() >= 3,
        "the requests did not decode together (largest batch {})",
        m.largest_batch()
    );
    // The path without batching gives the same answers.
    let unbatched = engine(8, false);
    let old = concurrently(&unbatched, mixed_requests()).await;
    assert_eq!(old, alone, "the unbatched path answers differently");
    assert_eq!(unbatched.largest_batch(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_one_sequence_mid_batch_leaves_the_others_intact() {
    let m = engine(4, true);
    let greedy = |n| Sampling {
        temperature: 0.0,
        max_tokens: Some(n),
        ..Sampling::default()
    };
    let prompts = [
        "Describe a lighthouse.",
        "Count from one to a hundred.",
        "Explain what bread is made of.",
    ];
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(collect(&m, ask(p, greedy(40))).await);
    }
    let mut gens = Vec::new();
    for p in prompts {
        gens.push(m.start(ask(p, greedy(40))).await.expect("admitted"));
    }
    let mut cancelled = gens.remove(1);
    // Let it produce a few tokens inside the batch, then hang up.
    for _ in 0..3 {
        assert!(matches!(
            cancelled.events.recv().await,
            Some(Ok(Event::Delta(_) | Event::Logprobs(_)))
        ));
    }
    drop(cancelled);
    let rest = futures::future::join_all(gens.into_iter().map(|g| async move {
        let a = g.collect().await.expect("a whole answer");
        (
            a.text,
            a.finish_reason,
            a.usage.prompt_tokens,
            a.usage.completion_tokens,
        )
    }))
    .await;
    assert_eq!(rest, vec![alone[0].clone(), alone[2].clone()]);
    assert!(
        m.largest_batch() >= 2,
        "largest batch {}",
        m.largest_batch()
    );
    // The freed slot serves the next request.
    let again = tokio::time::timeout(
        Duration::from_secs(60),
        collect(&m, ask(prompts[1], greedy(40))),
    )
    .await
    .expect("the engine is free");
    assert_eq!(again, alone[1]);
}
