//! Structured output on the embedded model: every schema of
//! `bench/structured/schemas.json` answered with `response_format`
//! `json_schema` (`strict`), greedily and with sampling, and the decode speed
//! of those answers against the same prompts answered without a constraint.
//! Writes one JSON line per answer to `--out` (validated against its schema
//! by `bench/structured/validate.py`) and prints a summary line.
//!
//! ```text
//! cargo run -p orinari-models --example bench_structured -- \
//!     --schemas bench/structured/schemas.json --out target/structured.jsonl [--seeds N] [--max-tokens N]
//! ```
//!
//! Decode speed is (completion tokens - 1) / (time from the first to the
//! last event): prompt processing is left out, and so is the grammar's
//! compilation, which happens before the first token. Both runs of a prompt
//! see the same text (the schema is described in the system turn either
//! way); the constrained one also has its logits masked at every step. The
//! unconstrained answers run to `max_tokens` (their end-of-turn token
//! masked by a bias) so each side decodes a similar number of tokens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark fails loudly and prints its result"
)]

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use orinari_api::tools::JsonSchema;
use orinari_models::local::{LocalConfig, LocalModel, default_model_path};
use orinari_models::{
    Event, GenerateRequest, Message, ModelBackend, Options, ResponseFormat, Sampling,
};

struct Run {
    text: String,
    finish: &'static str,
    tokens: u32,
    decode: Duration,
}

async fn run(model: &LocalModel, request: GenerateRequest) -> anyhow::Result<Run> {
    let mut g = model.start(request).await?;
    let mut first: Option<Instant> = None;
    let mut text = String::new();
    while let Some(event) = g.events.recv().await {
        let now = Instant::now();
        let since_first = now - *first.get_or_insert(now);
        match event? {
            Event::Delta(t) => text.push_str(&t),
            Event::ToolCall(_) | Event::Logprobs(_) => {}
            Event::Done {
                finish_reason,
                usage,
            } => {
                return Ok(Run {
                    text,
                    finish: finish_reason.as_str(),
                    tokens: usage.completion_tokens,
                    decode: since_first,
                });
            }
        }
    }
    anyhow::bail!("the answer ended without Done")
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let schemas_path = arg("--schemas").unwrap_or("bench/structured/schemas.json".into());
    let out_path = arg("--out").unwrap_or("target/structured.jsonl".into());
    let seeds: u64 = arg("--seeds").map_or(Ok(3), |s| s.parse())?;
    let max_tokens: u32 = arg("--max-tokens").map_or(Ok(256), |s| s.parse())?;
    let schemas: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(&schemas_path).with_context(|| schemas_path.clone())?,
    )?;
    let model = LocalModel::load(&LocalConfig {
        path: default_model_path(),
        context_size: None,
        max_active: 1,
        queue_depth: 1,
        requantize: true,
    })?;
    let mut out = std::fs::File::create(&out_path).with_context(|| out_path.clone())?;
    let (mut c_tokens, mut c_time, mut u_tokens, mut u_time) =
        (0u32, Duration::ZERO, 0u32, Duration::ZERO);
    let (mut answers, mut cut) = (0usize, 0usize);
    for s in &schemas {
        let name = s["name"].as_str().context("name")?;
        let prompt = s["prompt"].as_str().context("prompt")?;
        let schema = s["schema"].clone();
        let format = ResponseFormat::JsonSchema(JsonSchema {
            name: name.into(),
            description: None,
            schema: Some(schema.clone()),
            strict: Some(true),
        });
        // Greedy, then `seeds` sampled answers.
        for seed in 0..=seeds {
            let sampling = Sampling {
                temperature: if seed == 0 { 0.0 } else { 0.8 },
                seed: Some(seed),
                max_tokens: Some(max_tokens),
                ..Sampling::default()
            };
            let constrained = run(
                &model,
                GenerateRequest {
                    messages: vec![Message::text("user", prompt)],
                    sampling: sampling.clone(),
                    stream: true,
                    options: Options {
                        response_format: Some(format.clone()),
                        ..Options::default()
                    },
                },
            )
            .await
            .with_context(|| name.to_string())?;
            answers += 1;
            cut += usize::from(constrained.finish == "length");
            // The same prompt as the model saw it, without the constraint,
            // for as many tokens.
            let system = format!("Answer with JSON only, following this JSON Schema: {schema}");
            let free = run(
                &model,
                GenerateRequest {
                    messages: vec![
                        Message::text("system", system),
                        Message::text("user", prompt),
                    ],
                    sampling: Sampling {
                        max_tokens: Some(constrained.tokens.max(2)),
                        ..sampling
                    },
                    stream: true,
                    options: Options {
                        logit_bias: Some(
                            json!({"0": -100, "2": -100})
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                        ),
                        ..Options::default()
                    },
                },
            )
            .await?;
            c_tokens += constrained.tokens.saturating_sub(1);
            c_time += constrained.decode;
            u_tokens += free.tokens.saturating_sub(1);
            u_time += free.decode;
            writeln!(
                out,
                "{}",
                json!({
                    "name": name,
                    "seed": seed,
                    "text": constrained.text,
                    "finish_reason": constrained.finish,
                    "completion_tokens": constrained.tokens,
                    "decode_ms": constrained.decode.as_secs_f64() * 1e3,
                    "unconstrained_tokens": free.tokens,
                    "unconstrained_decode_ms": free.decode.as_secs_f64() * 1e3,
                })
            )?;
        }
    }
    let rate = |t: u32, d: Duration| f64::from(t) / d.as_secs_f64().max(1e-9);
    let (c, u) = (rate(c_tokens, c_time), rate(u_tokens, u_time));
    println!(
        "{}",
        json!({
            "schemas": schemas.len(),
            "answers": answers,
            "cut_by_max_tokens": cut,
            "constrained_tokens_per_s": (c * 10.0).round() / 10.0,
            "unconstrained_tokens_per_s": (u * 10.0).round() / 10.0,
            "cost_percent": ((1.0 - c / u) * 1000.0).round() / 10.0,
            "out": out_path,
        })
    );
    Ok(())
}
