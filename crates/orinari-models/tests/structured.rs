//! The embedded model's structured output, on the real GGUF: JSON that
//! follows a schema, tool calls in SmolLM2's format turned into OpenAI
//! calls, penalties and `logit_bias`, and clear errors for what cannot be
//! enforced.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use serde_json::{Value, json};

use orinari_api::tools::JsonSchema;
use orinari_models::local::{LocalConfig, LocalModel, default_model_path};
use orinari_models::{
    Answer, FinishReason, GenerateRequest, Message, ModelBackend, ModelError, Options,
    ResponseFormat, Sampling, Tool, ToolCall, ToolChoice,
};

fn model() -> LocalModel {
    LocalModel::load(&LocalConfig {
        path: default_model_path(),
        context_size: None,
        max_active: 2,
        queue_depth: 4,
        requantize: true,
    })
    .expect("run scripts/fetch-model.sh first")
}

fn request(
    messages: Vec<Message>,
    temperature: f32,
    seed: u64,
    options: Options,
) -> GenerateRequest {
    GenerateRequest {
        messages,
        sampling: Sampling {
            temperature,
            seed: Some(seed),
            max_tokens: Some(200),
            ..Sampling::default()
        },
        stream: true,
        options,
    }
}

async fn answer(m: &LocalModel, r: GenerateRequest) -> Answer {
    m.start(r)
        .await
        .expect("admitted")
        .collect()
        .await
        .expect("answered")
}

fn schema_format(schema: Value) -> Options {
    Options {
        response_format: Some(ResponseFormat::JsonSchema(JsonSchema {
            name: "answer".into(),
            description: None,
            schema: Some(schema),
            strict: Some(true),
        })),
        ..Options::default()
    }
}

fn tool(name: &str, description: &str, parameters: Value, strict: Option<bool>) -> Tool {
    Tool {
        name: name.into(),
        description: Some(description.into()),
        parameters: Some(parameters),
        strict,
    }
}

fn weather() -> Tool {
    tool(
        "get_weather",
        "The weather in a city",
        json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"],
            "additionalProperties": false,
        }),
        Some(true),
    )
}

fn time_tool() -> Tool {
    tool(
        "get_time",
        "The local time in a time zone",
        json!({
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
            "required": ["zone"],
        }),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_follow_the_schema_greedy_and_sampled() {
    let m = model();
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "sky": {"type": "string", "enum": ["sunny", "cloudy", "rain"]},
            "celsius": {"type": "integer", "minimum": -40, "maximum": 50},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
        },
        "required": ["city", "sky", "celsius", "tags"],
        "additionalProperties": false,
    });
    let ask = vec![Message::text("user", "What is the weather in Paris?")];
    for (temperature, seed) in [(0.0, 0), (0.9, 1), (0.9, 2), (1.2, 3)] {
        let a = answer(
            &m,
            request(
                ask.clone(),
                temperature,
                seed,
                schema_format(schema.clone()),
            ),
        )
        .await;
        assert_eq!(a.finish_reason, FinishReason::Stop, "{a:?}");
        let v: Value =
            serde_json::from_str(&a.text).unwrap_or_else(|e| panic!("{e}: {:?}", a.text));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 4, "{v}");
        assert!(o["city"].as_str().unwrap().chars().count() <= 40, "{v}");
        assert!(
            ["sunny", "cloudy", "rain"].contains(&o["sky"].as_str().unwrap()),
            "{v}"
        );
        assert!((-40..=50).contains(&o["celsius"].as_i64().unwrap()), "{v}");
        assert!(o["tags"].as_array().unwrap().len() <= 3, "{v}");
        assert!(a.tool_calls.is_empty());
    }
    // A budget too small for the answer the model wants to write: the
    // grammar steers it closed before the last token, so it still parses
    // (`length`: the content was cut short).
    let tree = json!({
        "$defs": {"node": {"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            "required": ["name", "children"], "additionalProperties": false}},
        "$ref": "#/$defs/node",
    });
    let deep = vec![Message::text(
        "user",
        "Describe a deep folder tree with long folder names.",
    )];
    for (seed, max_tokens) in [(1, 24), (2, 40), (3, 64)] {
        let mut r = request(deep.clone(), 1.0, seed, schema_format(tree.clone()));
        r.sampling.max_tokens = Some(max_tokens);
        let a = answer(&m, r).await;
        assert!(a.usage.completion_tokens <= max_tokens, "{a:?}");
        let v: Value =
            serde_json::from_str(&a.text).unwrap_or_else(|e| panic!("{e}: {:?}", a.text));
        assert!(v["name"].is_string() && v["children"].is_array(), "{v}");
    }

    // `json_object`: any object.
    let a = answer(
        &m,
        request(
            ask.clone(),
            0.0,
            0,
            Options {
                response_format: Some(ResponseFormat::JsonObject),
                ..Options::default()
            },
        ),
    )
    .await;
    let v: Value = serde_json::from_str(&a.text).unwrap_or_else(|e| panic!("{e}: {:?}", a.text));
    assert!(v.is_object(), "{v}");

    // A schema that cannot be enforced is the client's error, by field.
    let r = m
        .start(request(
            ask,
            0.0,
            0,
            schema_format(json!({"type": "object", "properties": {"a": {"type": "no-such-type"}}})),
        ))
        .await;
    match r {
        Err(ModelError::Invalid { param, message }) => {
            assert_eq!(param, "response_format.json_schema.schema");
            assert!(message.contains("cannot be enforced"), "{message}");
        }
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    }
}

fn calls_of(a: &Answer) -> Vec<(String, Value)> {
    a.tool_calls
        .iter()
        .map(|c: &ToolCall| {
            assert!(c.id.starts_with("call_"), "{c:?}");
            (c.name.clone(), serde_json::from_str(&c.arguments).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_follow_tool_choice_and_the_parameter_schemas() {
    let m = model();
    let ask = vec![Message::text(
        "user",
        "What will the weather be in Paris for the next 3 days?",
    )];
    let tools = vec![weather(), time_tool()];
    let with = |choice: Option<ToolChoice>, parallel: Option<bool>| Options {
        tools: tools.clone(),
        tool_choice: choice,
        parallel_tool_calls: parallel,
        ..Options::default()
    };

    // `required`, sampled several times: always calls, always valid.
    for seed in 0..4 {
        let a = answer(
            &m,
            request(
                ask.clone(),
                1.0,
                seed,
                with(Some(ToolChoice::Required), None),
            ),
        )
        .await;
        assert_eq!(a.finish_reason, FinishReason::ToolCalls, "{a:?}");
        assert!(a.text.is_empty(), "{a:?}");
        let calls = calls_of(&a);
        assert!(!calls.is_empty());
        for (name, args) in calls {
            match name.as_str() {
                "get_weather" => {
                    assert!(args["city"].is_string(), "{args}");
                    assert!((1..=7).contains(&args["days"].as_i64().unwrap()), "{args}");
                    assert_eq!(args.as_object().unwrap().len(), 2, "{args}");
                }
                "get_time" => {
                    assert!(["UTC", "CET", "PST"].contains(&args["zone"].as_str().unwrap()))
                }
                other => panic!("called an undeclared tool {other}"),
            }
        }
    }

    // A named function, one call only.
    let a = answer(
        &m,
        request(
            ask.clone(),
            0.0,
            0,
            with(Some(ToolChoice::Function("get_time".into())), Some(false)),
        ),
    )
    .await;
    let calls = calls_of(&a);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].0, "get_time");

    // The result goes back as a `tool` turn; with `tool_choice: "none"`
    // the answer is text.
    let mut history = ask.clone();
    let mut call = Message::text("assistant", "");
    call.tool_calls = a.tool_calls.clone();
    history.push(call);
    let mut result = Message::text("tool", "It is 14:05 CET.");
    result.tool_call_id = Some(a.tool_calls[0].id.clone());
    history.push(result);
    let a = answer(
        &m,
        request(history, 0.0, 0, with(Some(ToolChoice::None), None)),
    )
    .await;
    assert!(a.tool_calls.is_empty(), "{a:?}");
    assert!(!a.text.is_empty());
    assert_ne!(a.finish_reason, FinishReason::ToolCalls);

    // `auto`: either a valid call or text that is not a call.
    for seed in 0..3 {
        let a = answer(&m, request(ask.clone(), 1.0, seed, with(None, None))).await;
        if a.finish_reason == FinishReason::ToolCalls {
            assert!(!calls_of(&a).is_empty());
        } else {
            assert!(!a.text.starts_with('<'), "{a:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_and_penalties_change_what_is_sampled() {
    let m = model();
    let ask = vec![Message::text("user", "Name a colour.")];
    let greedy = |options: Options| request(ask.clone(), 0.0, 0, options);
    let plain = m.start(greedy(Options::default())).await.unwrap();
    let mut events = plain.events;
    let first = loop {
        match events.recv().await.unwrap().unwrap() {
            orinari_models::Event::Delta(t) if !t.is_empty() => break t,
            _ => {}
        }
    };
    drop(events);
    // Ban the greedy answer's first token: the answer changes.
    let vocab = orinari_models::local::load_vocab(&default_model_path()).unwrap();
    let banned = vocab.tokenizer.encode_text(&first).unwrap()[0];
    let bias = json!({ banned.to_string(): -100 }).as_object().cloned();
    let a = answer(
        &m,
        greedy(Options {
            logit_bias: bias,
            ..Options::default()
        }),
    )
    .await;
    assert!(!a.text.starts_with(&first), "{first:?} then {:?}", a.text);

    // A strong frequency penalty breaks a greedy repetition.
    let repeat = vec![Message::text(
        "user",
        "Write the word yes forty times: yes yes yes yes",
    )];
    let count = |t: &str| t.matches("yes").count();
    let free = answer(&m, request(repeat.clone(), 0.0, 0, Options::default())).await;
    let penalised = answer(
        &m,
        request(
            repeat,
            0.0,
            0,
            Options {
                frequency_penalty: Some(2.0),
                ..Options::default()
            },
        ),
    )
    .await;
    assert!(
        count(&penalised.text) < count(&free.text),
        "{:?} vs {:?}",
        free.text,
        penalised.text
    );

    // A bias on a token the model does not have is refused by field.
    let r = m
        .start(greedy(Options {
            logit_bias: json!({"99999999": 5}).as_object().cloned(),
            ..Options::default()
        }))
        .await;
    assert!(
        matches!(r, Err(ModelError::Invalid { ref param, .. }) if param == "logit_bias.99999999"),
        "{:?}",
        r.map(|_| ())
    );
}
