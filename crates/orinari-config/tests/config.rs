//! The configuration contract: embedded defaults, unknown keys and type
//! errors with `file:line:column`, environment overrides, semantic checks
//! that name the key, and the annotated example file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orinari_config::{Config, ConfigError};

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ok(text: &str) -> Config {
    match orinari_config::parse(text, "test.toml", no_env()) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}\n---\n{text}"),
    }
}

fn fails(text: &str) -> String {
    fails_with(text, no_env())
}

fn fails_with(text: &str, env: Vec<(String, String)>) -> String {
    match orinari_config::parse(text, "test.toml", env) {
        Ok(c) => panic!("expected an error, got {c:?}\n---\n{text}"),
        Err(ConfigError(msg)) => msg,
    }
}

fn assert_contains(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "expected {n:?} in error: {msg}");
    }
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../orinari.example.toml")
}

// ---------------------------------------------------------------- defaults

#[test]
fn embedded_defaults() {
    let c = orinari_config::load(None, no_env()).unwrap();
    assert_eq!(
        c.server.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.models.len(), 1);
    assert_eq!(c.models[0].name, "orinari-small");
    assert_eq!(c.models[0].local.path, None);
    assert_eq!(c.max_body_bytes, 1_048_576);
    assert_eq!(c.max_input_chars, 32_000);
    assert_eq!(c.queue_depth, 256);
    assert!(!c.auth_required);
    assert_eq!(c.server.admin_token_env, "ORINARI_ADMIN_TOKEN");
    assert_eq!(c.server.region, "local");
    assert_eq!(c.server.shutdown_timeout, Duration::from_secs(30));
    assert!(c.inactive.is_empty(), "{:?}", c.inactive);
}

#[test]
fn empty_file_equals_embedded_defaults() {
    let from_file = ok("# nothing here\n");
    let embedded = orinari_config::load(None, no_env()).unwrap();
    assert_eq!(from_file, embedded);
}

#[test]
fn defaults_match_the_named_constants() {
    use orinari_config::defaults as d;
    let c = ok("");
    assert_eq!(c.server.listen.to_string(), d::LISTEN);
    assert_eq!(c.models[0].name, d::LOCAL_MODEL);
    assert_eq!(c.max_body_bytes as u64, d::MAX_BODY_BYTES);
    assert_eq!(c.max_input_chars as u32, d::MAX_INPUT_CHARS);
    assert_eq!(c.models[0].local.parallel as u32, d::LOCAL_PARALLEL);
}

#[test]
fn models_from_file_replace_the_default() {
    let c = ok(r#"
[[models]]
name = "a"
backend = "local"
parallel = 2
context_size = 512
requantize = false
path = "/srv/a.gguf"

[[models]]
name = "b"
backend = "local"
"#);
    let names: Vec<_> = c.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(c.models[0].local.parallel, 2);
    assert_eq!(c.models[0].local.context_size, Some(512));
    assert!(!c.models[0].local.requantize);
    assert_eq!(
        c.models[0].local.path.as_deref(),
        Some(Path::new("/srv/a.gguf"))
    );
    assert!(c.models[1].local.requantize);
}

// ------------------------------------------------- unknown keys, positions

#[test]
fn unknown_top_level_key() {
    let msg = fails("# a comment\n\nbogus = 1\n");
    assert!(msg.starts_with("test.toml:3:1: "), "{msg}");
    assert_contains(&msg, &["unknown field `bogus`"]);
}

#[test]
fn unknown_key_in_server() {
    let msg = fails("[server]\nlisten = \"127.0.0.1:8080\"\n  colour = 1\n");
    assert!(msg.starts_with("test.toml:3:3: "), "{msg}");
    assert_contains(&msg, &["unknown field `colour`"]);
}

#[test]
fn unknown_key_in_models() {
    let msg = fails("[[models]]\nname = \"a\"\nbackend = \"local\"\nflavour = \"x\"\n");
    assert!(msg.starts_with("test.toml:4:1: "), "{msg}");
    assert_contains(&msg, &["unknown field `flavour`"]);
}

#[test]
fn unknown_key_in_second_model() {
    let msg = fails(
        "[[models]]\nname = \"a\"\nbackend = \"local\"\n\n[[models]]\nname = \"b\"\nbackend = \"local\"\n    flavour = 1\n",
    );
    assert!(msg.starts_with("test.toml:8:5: "), "{msg}");
    assert_contains(&msg, &["unknown field `flavour`"]);
}

#[test]
fn unknown_key_in_nested_server_tls() {
    let msg =
        fails("[server]\nregion = \"eu\"\n\n[server.tls]\nlisten = \"0.0.0.0:8443\"\nbogus = 2\n");
    assert!(msg.starts_with("test.toml:6:1: "), "{msg}");
    assert_contains(&msg, &["unknown field `bogus`"]);
}

#[test]
fn unknown_key_in_other_sections() {
    for (text, line, col, key) in [
        ("[limits]\nrpm = 1\n", 2, 1, "rpm"),
        ("[guard]\n\n\n  strict = true\n", 4, 3, "strict"),
        ("[auth]\nrequired = false\nkeys = []\n", 3, 1, "keys"),
        ("[backup]\nkey = \"inline\"\n", 2, 1, "key"),
        (
            "[[status.checks]]\nname = \"x\"\nurl = \"http://a/\"\nevery = \"1s\"\n",
            4,
            1,
            "every",
        ),
    ] {
        let msg = fails(text);
        let at = format!("test.toml:{line}:{col}: ");
        assert!(msg.starts_with(&at), "expected {at:?}: {msg}");
        assert_contains(&msg, &[&format!("unknown field `{key}`")]);
    }
}

#[test]
fn column_counts_characters_not_bytes() {
    // "é" is two bytes; the column is still the character position.
    let msg = fails("[server]\nregion = \"é\"\n[limits]\nqueue_depth = \"x\"\n");
    assert!(msg.starts_with("test.toml:4:15: "), "{msg}");
    let msg = fails("[server]\nregion = \"é\"; x = 1\n");
    assert!(msg.starts_with("test.toml:2:"), "{msg}");
}

// ------------------------------------------------------------ type errors

#[test]
fn type_error_names_position() {
    let msg = fails("[limits]\nqueue_depth = \"x\"\n");
    assert!(msg.starts_with("test.toml:2:15: "), "{msg}");
    assert_contains(&msg, &["invalid type", "\"x\""]);
}

#[test]
fn type_errors_elsewhere() {
    let msg = fails("[auth]\nrequired = \"no\"\n");
    assert!(msg.starts_with("test.toml:2:12: "), "{msg}");
    let msg = fails("[limits]\nmax_body_bytes = -1\n");
    assert!(msg.starts_with("test.toml:2:18: "), "{msg}");
    let msg = fails("[server]\nlisten = 8080\n");
    assert!(msg.starts_with("test.toml:2:10: "), "{msg}");
}

#[test]
fn toml_syntax_error_names_position() {
    let msg = fails("[server]\nlisten = \n");
    assert!(msg.starts_with("test.toml:2:"), "{msg}");
}

#[test]
fn missing_required_model_name() {
    let msg = fails("[[models]]\nbackend = \"local\"\n");
    assert!(msg.starts_with("test.toml:1:"), "{msg}");
    assert_contains(&msg, &["name"]);
}

// ---------------------------------------------------- environment overrides

const FILE: &str = r#"
[server]
listen = "127.0.0.1:7000"
[limits]
max_body_bytes = 2048
[guard]
max_input_chars = 100
[auth]
required = false
"#;

#[test]
fn file_values_without_env() {
    let c = ok(FILE);
    assert_eq!(c.server.listen.port(), 7000);
    assert_eq!(c.max_body_bytes, 2048);
    assert_eq!(c.max_input_chars, 100);
}

#[test]
fn env_overrides_apply_over_the_file() {
    let c = orinari_config::parse(
        FILE,
        "test.toml",
        env(&[
            ("ORINARI_SERVER_LISTEN", "0.0.0.0:9100"),
            ("ORINARI_LIMITS_MAX_BODY_BYTES", "4096"),
            ("ORINARI_GUARD_MAX_INPUT_CHARS", "77"),
            ("ORINARI_AUTH_REQUIRED", "false"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.server.listen,
        "0.0.0.0:9100".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.max_body_bytes, 4096);
    assert_eq!(c.max_input_chars, 77);
    assert!(!c.auth_required);
}

#[test]
fn env_overrides_apply_over_defaults() {
    let c = orinari_config::load(
        None,
        env(&[
            ("ORINARI_SERVER_LISTEN", "127.0.0.1:0"),
            ("ORINARI_SERVER_SHUTDOWN_TIMEOUT_MS", "300"),
            ("ORINARI_LIMITS_QUEUE_DEPTH", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(c.server.listen.port(), 0);
    assert_eq!(c.server.shutdown_timeout, Duration::from_millis(300));
    assert_eq!(c.queue_depth, 3);
}

#[test]
fn env_auth_required_false_allows_public_listen() {
    let c = orinari_config::load(
        None,
        env(&[
            ("ORINARI_SERVER_LISTEN", "0.0.0.0:8080"),
            ("ORINARI_AUTH_REQUIRED", "false"),
        ]),
    )
    .unwrap();
    assert!(!c.auth_required);
}

#[test]
fn env_auth_required_true_overrides_the_file() {
    let c =
        orinari_config::parse(FILE, "t.toml", env(&[("ORINARI_AUTH_REQUIRED", "true")])).unwrap();
    assert!(c.auth_required);
    assert!(c.admission.auth_required);
}

#[test]
fn non_override_variables_are_ignored() {
    let c = orinari_config::parse(
        FILE,
        "test.toml",
        env(&[
            ("ORINARI_MODEL_PATH", "/nowhere/model.gguf"),
            ("ORINARI_ADMIN_TOKEN", "secret"),
            ("ORINARI_BACKUP_KEY", "c2VjcmV0"),
            ("ORINARI_LOG", "debug"),
            ("ORINARI_SERVER", "x"),
            ("ORINARI_NOPE_LISTEN", "x"),
            ("HOME", "/root"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .unwrap();
    assert_eq!(c, ok(FILE));
    assert_eq!(c.models[0].local.path, None);
}

#[test]
fn env_string_keys_accept_numeric_looking_values() {
    let c = orinari_config::load(None, env(&[("ORINARI_SERVER_REGION", "2")])).unwrap();
    assert_eq!(c.server.region, "2");
    let c = orinari_config::load(None, env(&[("ORINARI_SERVER_ADMIN_TOKEN_ENV", "true")])).unwrap();
    assert_eq!(c.server.admin_token_env, "true");
}

#[test]
fn bad_env_value_names_the_variable_and_key() {
    for (var, value, key) in [
        (
            "ORINARI_LIMITS_MAX_BODY_BYTES",
            "abc",
            "limits.max_body_bytes",
        ),
        (
            "ORINARI_LIMITS_MAX_BODY_BYTES",
            "-5",
            "limits.max_body_bytes",
        ),
        (
            "ORINARI_GUARD_MAX_INPUT_CHARS",
            "lots",
            "guard.max_input_chars",
        ),
        ("ORINARI_AUTH_REQUIRED", "maybe", "auth.required"),
        (
            "ORINARI_LIMITS_QUEUE_DEPTH",
            "99999999999",
            "limits.queue_depth",
        ),
    ] {
        let msg = fails_with(FILE, env(&[(var, value)]));
        assert_contains(&msg, &[var, key]);
    }
}

#[test]
fn semantically_bad_env_value_names_the_key() {
    let msg = fails_with(FILE, env(&[("ORINARI_SERVER_LISTEN", "not-an-address")]));
    assert_contains(&msg, &["server.listen", "not-an-address"]);
    let msg = fails_with(FILE, env(&[("ORINARI_LIMITS_MAX_BODY_BYTES", "0")]));
    assert_contains(&msg, &["limits.max_body_bytes"]);
    let msg = fails_with(FILE, env(&[("ORINARI_GUARD_MAX_INPUT_CHARS", "0")]));
    assert_contains(&msg, &["guard.max_input_chars"]);
}

// -------------------------------------------------------- semantic errors

#[test]
fn listen_not_an_address() {
    for bad in [
        "localhost",
        "127.0.0.1",
        "example.org:80",
        "127.0.0.1:99999",
        "",
    ] {
        let msg = fails(&format!("[server]\nlisten = \"{bad}\"\n"));
        assert_contains(&msg, &["test.toml", "`server.listen`"]);
    }
}

#[test]
fn zero_limits_are_refused() {
    for (section, key) in [
        ("limits", "requests_per_minute"),
        ("limits", "tokens_per_minute"),
        ("limits", "max_concurrent_per_key"),
        ("limits", "queue_depth"),
        ("limits", "queue_timeout_ms"),
        ("limits", "max_body_bytes"),
        ("guard", "max_input_chars"),
        ("server", "shutdown_timeout_ms"),
    ] {
        let msg = fails(&format!("[{section}]\n{key} = 0\n"));
        assert_contains(&msg, &[&format!("`{section}.{key}`"), "at least 1"]);
    }
    let msg = fails("[[models]]\nname = \"a\"\nbackend = \"local\"\nparallel = 0\n");
    assert_contains(&msg, &["`models[0].parallel`"]);
    let msg = fails("[[models]]\nname = \"a\"\nbackend = \"local\"\ncontext_size = 10\n");
    assert_contains(&msg, &["`models[0].context_size`"]);
}

#[test]
fn prompt_injection_values() {
    use orinari_config::PromptInjection;
    for (good, want) in [
        ("block", PromptInjection::Block),
        ("flag", PromptInjection::Flag),
        ("off", PromptInjection::Off),
    ] {
        let c = ok(&format!("[guard]\nprompt_injection = \"{good}\"\n"));
        assert_eq!(c.prompt_injection, want);
        assert!(!c.inactive.iter().any(|s| s.contains("guard")));
    }
    assert_eq!(ok("").prompt_injection, PromptInjection::Block);
    let c = fails_with(
        "[guard]\nprompt_injection = \"off\"\n",
        env(&[("ORINARI_GUARD_PROMPT_INJECTION", "never")]),
    );
    assert_contains(&c, &["guard.prompt_injection", "never"]);
    let msg = fails("[guard]\nprompt_injection = \"sometimes\"\n");
    assert_contains(
        &msg,
        &["`guard.prompt_injection`", "sometimes", "block, flag, off"],
    );
}

#[test]
fn duplicate_model_names() {
    let msg = fails(
        "[[models]]\nname = \"a\"\nbackend = \"local\"\n[[models]]\nname = \"b\"\nbackend = \"local\"\n[[models]]\nname = \"a\"\nbackend = \"local\"\n",
    );
    assert_contains(&msg, &["`models[2].name`", "`a`", "twice"]);
}

#[test]
fn empty_model_name_and_backend() {
    let msg = fails("[[models]]\nname = \" \"\nbackend = \"local\"\n");
    assert_contains(&msg, &["`models[0].name`"]);
    let msg = fails("[[models]]\nname = \"a\"\n");
    assert_contains(&msg, &["`models[0].backend`", "local"]);
    let msg = fails("[[models]]\nname = \"a\"\nbackend = \"openai\"\n");
    assert_contains(&msg, &["`models[0].backend`", "openai"]);
}

#[test]
fn upstream_models_validate_and_name_the_key() {
    let c = orinari_config::parse(
        r#"
[[models]]
name = "gpt-4o-mini"
strategy = "round-robin"
fallback = ["orinari-small"]
first_token_timeout_ms = 900
groups = { blue = 90, green = 10 }
[[models.backends]]
name = "primary-a"
provider = "openai"
base_url = "http://127.0.0.1:9001/v1/"
api_key_env = "UPSTREAM_KEY"
group = "blue"
[[models.backends]]
name = "claude"
provider = "anthropic"
base_url = "https://api.anthropic.com/v1"
model = "claude-3-5-haiku-latest"
weight = 5
group = "green"
http_version = "2"
[[models]]
name = "orinari-small"
backend = "local"
"#,
        "test.toml",
        no_env(),
    )
    .unwrap();
    let u = c.models[0].upstream.as_ref().unwrap();
    assert_eq!(u.strategy, orinari_config::models::StrategyName::RoundRobin);
    assert_eq!(u.fallback, vec!["orinari-small".to_string()]);
    assert_eq!(u.first_token_timeout.as_millis(), 900);
    assert_eq!(
        u.idle_timeout.as_millis() as u64,
        orinari_config::defaults::IDLE_TIMEOUT_MS
    );
    assert_eq!(u.backends[0].base_url, "http://127.0.0.1:9001/v1");
    assert_eq!(u.backends[0].model, "gpt-4o-mini");
    use orinari_config::models::HttpVersion;
    assert_eq!(
        (u.backends[0].http_version, u.backends[1].http_version),
        (HttpVersion::Auto, HttpVersion::Http2)
    );
    assert_eq!(
        u.backends[0].weight,
        orinari_config::defaults::BACKEND_WEIGHT
    );
    assert_eq!(
        u.backends[1].provider,
        orinari_config::models::Provider::Anthropic
    );
    assert_eq!(u.groups["green"], 10);
    assert!(c.models[1].upstream.is_none());

    let backend =
        "[[models.backends]]\nname = \"a\"\nprovider = \"openai\"\nbase_url = \"http://x/v1\"\n";
    let model = |extra: &str| format!("[[models]]\nname = \"m\"\n{extra}\n{backend}");
    for (extra, key, why) in [
        (
            "strategy = \"fastest\"",
            "`models[0].strategy`",
            "unknown strategy",
        ),
        (
            "fallback = [\"nope\"]",
            "`models[0].fallback[0]`",
            "no model `nope`",
        ),
        ("fallback = [\"m\"]", "`models[0].fallback[0]`", "itself"),
        (
            "backend = \"local\"",
            "`models[0].backend`",
            "exclude each other",
        ),
        (
            "max_attempts = 0",
            "`models[0].max_attempts`",
            "from 1 to 10",
        ),
        (
            "idle_timeout_ms = 0",
            "`models[0].idle_timeout_ms`",
            "at least 1 ms",
        ),
        (
            "error_rate_threshold = 1.5",
            "`models[0].error_rate_threshold`",
            "(0, 1]",
        ),
        (
            "groups = { green = 1 }",
            "`models[0].groups`",
            "no backend is in group `green`",
        ),
        (
            "first_token_timeout_ms = 5000\ntotal_timeout_ms = 10",
            "`models[0].total_timeout_ms`",
            "shorter",
        ),
    ] {
        assert_contains(&fails(&model(extra)), &[key, why]);
    }
    let bad_backend = |line: &str| {
        fails(&format!(
            "[[models]]\nname = \"m\"\n[[models.backends]]\nname = \"a\"\n{line}\n"
        ))
    };
    assert_contains(
        &bad_backend("provider = \"cohere\"\nbase_url = \"http://x/v1\""),
        &[
            "`models[0].backends[0].provider`",
            "unknown provider `cohere`",
        ],
    );
    assert_contains(
        &bad_backend("provider = \"openai\"\nbase_url = \"ftp://x\""),
        &["`models[0].backends[0].base_url`", "not an http"],
    );
    assert_contains(
        &bad_backend("provider = \"openai\"\nbase_url = \"https://u:sk-1@x/v1\""),
        &["`models[0].backends[0].base_url`", "credentials"],
    );
    assert_contains(
        &bad_backend(
            "provider = \"openai\"\nbase_url = \"http://x\"\napi_key_env = \"sk-live key\"",
        ),
        &["`models[0].backends[0].api_key_env`"],
    );
    assert_contains(
        &bad_backend("provider = \"openai\"\nbase_url = \"http://x/v1\"\nhttp_version = \"3\""),
        &[
            "`models[0].backends[0].http_version`",
            "unknown HTTP version `3`; expected auto, 1.1 or 2",
        ],
    );
    let twice = format!("[[models]]\nname = \"m\"\n{backend}{backend}");
    assert_contains(&fails(&twice), &["`models[0].backends[1].name`", "twice"]);
    // Strategies and fallbacks belong to pools, not to the embedded model.
    let msg = fails("[[models]]\nname = \"m\"\nbackend = \"local\"\nstrategy = \"p2c-ewma\"\n");
    assert_contains(&msg, &["`models[0].strategy`"]);
}

#[test]
fn unknown_backend_key_still_points_at_the_line() {
    let msg = fails(
        "[[models]]\nname = \"m\"\n[[models.backends]]\nname = \"a\"\nprovider = \"openai\"\nbase_url = \"http://x/v1\"\ntimeout = 3\n",
    );
    assert!(msg.starts_with("test.toml:7:1: "), "{msg}");
}

#[test]
fn tls_is_typed_and_checked() {
    let c = ok("[server.tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n");
    let t = c.tls.expect("tls configured");
    assert_eq!(t.listen.to_string(), "127.0.0.1:8443");
    assert_eq!(t.cert, std::path::PathBuf::from("c.pem"));
    assert!(!t.modern);
    assert!(!c.auth_required, "both listeners on loopback");
    // A public HTTPS listener makes keys required by default.
    let c = ok("[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nmodern = true\n");
    assert!(c.auth_required);
    assert!(c.tls.unwrap().modern);
    assert_contains(
        &fails("[server.tls]\ncert = \"c.pem\"\n"),
        &["`server.tls.key`", "required"],
    );
    assert_contains(
        &fails("[server.tls]\nlisten = \"nope\"\ncert = \"c\"\nkey = \"k\"\n"),
        &["`server.tls.listen`"],
    );
    let c = ok(
        "[server.tls]\nacme = { domains = [\"example.org\", \"www.example.org\"], contact = \"mailto:ops@example.org\" }\n",
    );
    let t = c.tls.unwrap();
    let a = t.acme.unwrap();
    assert_eq!(a.domains, ["example.org", "www.example.org"]);
    assert_eq!(
        a.directory,
        "https://acme-v02.api.letsencrypt.org/directory"
    );
    assert_eq!(a.renew_before, std::time::Duration::from_secs(30 * 86_400));
    assert_eq!(t.cert, a.cache_dir.join("cert.pem"));
    assert_contains(
        &fails("[server.tls]\nacme = { domains = [] }\n"),
        &["server.tls.acme.domains", "at least one"],
    );
    assert_contains(
        &fails("[server.tls]\nacme = { domains = [\"exa mple.org\"] }\n"),
        &["server.tls.acme.domains[0]"],
    );
    assert_contains(
        &fails("[server.tls]\nacme = { domains = [\"a.org\"], contact = \"ops@a.org\" }\n"),
        &["server.tls.acme.contact", "mailto:"],
    );
    assert_contains(
        &fails("[server.tls]\ncert = \"c\"\nkey = \"k\"\nacme = { domains = [\"a.org\"] }\n"),
        &["not both"],
    );
    assert_contains(
        &fails("[server.tls]\nacme = { domains = [\"a.org\"], directory = \"http://x\" }\n"),
        &["server.tls.acme.directory", "https://"],
    );
    // A cluster (PostgreSQL) shares the certificate through the store,
    // sealed: the key is required there, optional with SQLite.
    assert_eq!(a.key_env, None);
    let pg = "[storage]\nurl = \"postgres://db/orinari\"\n[server.tls]\n";
    assert_contains(
        &fails(&format!("{pg}acme = {{ domains = [\"a.org\"] }}\n")),
        &[
            "`server.tls.acme.key_env`",
            "required",
            "PostgreSQL",
            "base64",
        ],
    );
    let c = ok(&format!(
        "{pg}acme = {{ domains = [\"a.org\"], key_env = \"ORINARI_ACME_KEY\" }}\n"
    ));
    assert_eq!(
        c.tls.unwrap().acme.unwrap().key_env.as_deref(),
        Some("ORINARI_ACME_KEY")
    );
    assert_contains(
        &fails("[server.tls]\nacme = { domains = [\"a.org\"], key_env = \"MY KEY\" }\n"),
        &[
            "`server.tls.acme.key_env`",
            "not an environment variable name",
        ],
    );
}

#[test]
fn non_loopback_listen_requires_keys_by_default() {
    let c = ok("[server]\nlisten = \"0.0.0.0:8080\"\n");
    assert!(c.auth_required);
    let c = ok("[server]\nlisten = \"127.0.0.1:8080\"\n");
    assert!(!c.auth_required);
    let c = ok("[server]\nlisten = \"127.0.0.1:8080\"\n[auth]\nrequired = true\n");
    assert!(c.auth_required);
}

#[test]
fn admission_settings_have_documented_defaults_and_named_errors() {
    let c = ok("");
    let a = &c.admission;
    assert_eq!(a.limits.requests_per_minute, 600);
    assert_eq!(a.limits.tokens_per_minute, 200_000);
    assert_eq!(a.limits.queue_depth, 256);
    assert_eq!(a.connections.max_connections_per_ip, 64);
    assert!(a.redis_url.is_none());
    // /admin answers loopback only unless configured.
    assert!(a.firewall.admin.permits("127.0.0.1".parse().unwrap()));
    assert!(
        a.firewall
            .admin
            .permits("::ffff:127.0.0.1".parse().unwrap())
    );
    assert!(!a.firewall.admin.permits("10.1.2.3".parse().unwrap()));
    assert!(a.firewall.api.permits("10.1.2.3".parse().unwrap()));
    let c = ok(
        "[firewall]\ndeny = [\"10.0.0.0/8\"]\n[firewall.api]\nallow = [\"10.0.0.0/8\", \"192.168.1.7\"]\n[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n",
    );
    assert!(
        !c.admission
            .firewall
            .api
            .permits("10.1.2.3".parse().unwrap()),
        "deny wins"
    );
    assert!(
        c.admission
            .firewall
            .api
            .permits("192.168.1.7".parse().unwrap())
    );
    assert!(
        !c.admission
            .firewall
            .api
            .permits("192.168.1.8".parse().unwrap())
    );
    assert!(
        !c.admission
            .firewall
            .pages
            .permits("10.9.9.9".parse().unwrap())
    );
    assert_eq!(
        c.admission.redis_url.as_deref(),
        Some("redis://127.0.0.1:6379")
    );
    assert_contains(
        &fails("[firewall.admin]\nallow = [\"10.0.0.0/33\"]\n"),
        &["firewall.admin.allow[0]", "CIDR"],
    );
    assert_contains(
        &fails("[limits]\nmax_concurrent_per_model = 0\n"),
        &["limits.max_concurrent_per_model", "at least 1"],
    );
    assert_contains(
        &fails("[server]\nmax_header_bytes = 100\n"),
        &["server.max_header_bytes"],
    );
    assert_contains(
        &fails("[cluster]\nredis_url = \"http://x\"\n"),
        &["cluster.redis_url", "redis://"],
    );
}

#[test]
fn explicit_auth_false_on_any_address_is_accepted() {
    let c = ok("[server]\nlisten = \"0.0.0.0:8080\"\n[auth]\nrequired = false\n");
    assert!(!c.auth_required);
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    let c = ok("[server]\nlisten = \"[::]:8080\"\n[auth]\nrequired = false\n");
    assert!(!c.auth_required);
}

#[test]
fn loopback_listeners_need_no_auth() {
    for addr in ["127.0.0.1:1", "[::1]:8080", "127.0.0.2:8080"] {
        let c = ok(&format!("[server]\nlisten = \"{addr}\"\n"));
        assert!(!c.auth_required, "{addr}");
    }
}

#[test]
fn bad_durations() {
    for bad in [
        "5",
        "5 m",
        "m",
        "1.5s",
        "-1s",
        "5w",
        "0d",
        "0s",
        "0m",
        "0ms",
        "",
        "18446744073709551615h",
    ] {
        let msg = fails(&format!("[backup]\ninterval = \"{bad}\"\n"));
        assert_contains(&msg, &["`backup.interval`"]);
        let msg = fails(&format!(
            "[[status.checks]]\nname = \"a\"\nurl = \"http://127.0.0.1/\"\ninterval = \"30s\"\n[[status.checks]]\nname = \"b\"\nurl = \"http://127.0.0.1/\"\ninterval = \"{bad}\"\n"
        ));
        assert_contains(&msg, &["`status.checks[1].interval`"]);
    }
    for good in ["500ms", "30s", "5m", "1h", "7d"] {
        ok(&format!("[backup]\ninterval = \"{good}\"\n"));
    }
}

#[test]
fn other_shape_checks_name_the_key() {
    let msg = fails("[storage]\nurl = \"mysql://db\"\n");
    assert_contains(&msg, &["`storage.url`"]);
    let msg = fails("[cluster]\nredis_url = \"http://x\"\n");
    assert_contains(&msg, &["`cluster.redis_url`"]);
    let msg = fails("[[sources]]\nname = \"a\"\nkind = \"ftp\"\n");
    assert_contains(&msg, &["`sources[0].kind`"]);
    let msg = fails("[[status.checks]]\nname = \"a\"\nurl = \"ftp://x\"\n");
    assert_contains(&msg, &["`status.checks[0].url`"]);
    let msg = fails("[backup]\ndestinations = [\"file:///a\", \"/tmp/b\"]\n");
    assert_contains(&msg, &["`backup.destinations[1]`"]);
    let msg = fails("[server]\nadmin_token_env = \"\"\n");
    assert_contains(&msg, &["`server.admin_token_env`"]);
}

// ------------------------------------------------------- files, discovery

#[test]
fn load_names_a_missing_file() {
    let p = Path::new("/nonexistent/dir/orinari.toml");
    let Err(ConfigError(msg)) = orinari_config::load(Some(p), no_env()) else {
        panic!("expected an error");
    };
    assert_contains(&msg, &["/nonexistent/dir/orinari.toml", "cannot read"]);
}

#[test]
fn load_reports_the_file_path_in_positions() {
    let dir = std::env::temp_dir().join(format!("orinari-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.toml");
    std::fs::write(&p, "[server]\n\nwhat = 1\n").unwrap();
    let Err(ConfigError(msg)) = orinari_config::load(Some(&p), no_env()) else {
        panic!("expected an error");
    };
    assert!(msg.starts_with(&format!("{}:3:1: ", p.display())), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn discover_prefers_the_explicit_path() {
    let p = PathBuf::from("/some/where.toml");
    assert_eq!(orinari_config::discover(Some(p.clone())), Some(p));
}

// ------------------------------------------------------------ the example

#[test]
fn example_file_passes() {
    let path = example_path();
    let c = match orinari_config::load(Some(&path), no_env()) {
        Ok(c) => c,
        Err(e) => panic!("orinari.example.toml must pass: {e}"),
    };
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.models.len(), 1);
    assert_eq!(c.models[0].name, "orinari-small");
    assert_eq!(c.max_body_bytes, 1_048_576);
    assert_eq!(c.max_input_chars, 32_000);
    assert!(!c.auth_required);
}

/// Every key the contract names appears in the example, set or commented out.
#[test]
fn example_file_mentions_every_contract_key() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    for section in [
        "[server]",
        "[server.tls]",
        "[storage]",
        "[cluster]",
        "[limits]",
        "[auth]",
        "[guard]",
        "[[models]]",
        "[[models.backends]]",
        "[[sources]]",
        "[[status.checks]]",
        "[backup]",
    ] {
        assert!(text.contains(section), "missing section {section}");
    }
    for key in [
        "listen",
        "admin_token_env",
        "region",
        "cert",
        "key",
        "acme",
        "url",
        "redis_url",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent_per_key",
        "queue_depth",
        "queue_timeout_ms",
        "max_body_bytes",
        "required",
        "prompt_injection",
        "max_input_chars",
        "name",
        "backend",
        "strategy",
        "fallback",
        "provider",
        "base_url",
        "api_key_env",
        "weight",
        "group",
        "kind",
        "path",
        "timeout_ms",
        "interval",
        "destinations",
        "key_env",
    ] {
        let set = format!("\n{key} = ");
        let commented = format!("# {key} = ");
        assert!(
            text.contains(&set) || text.contains(&commented),
            "missing key {key}"
        );
    }
}

/// Uncommenting the refused parts of the example is refused, naming the key.
#[test]
fn example_refused_parts_are_refused_when_uncommented() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let uncomment = |marker: &str| -> String {
        let mut out = String::new();
        let mut inside = false;
        for line in text.lines() {
            let t = line.trim_start();
            if t.starts_with(&format!("# {marker}")) {
                inside = true;
            } else if !t.starts_with('#') {
                inside = false;
            }
            if inside {
                out.push_str(t.strip_prefix("# ").unwrap_or(t));
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    };
    let tls = uncomment("[server.tls]").replace("acme = {", "# acme = {");
    let c = orinari_config::parse(&tls, "example", no_env()).unwrap();
    assert!(c.tls.is_some());
    // Uncommented whole, it gives both files and acme: refused, naming why.
    let acme = uncomment("[server.tls]");
    assert_contains(&fails(&acme), &["`server.tls.acme`", "not both"]);
    // The commented upstream model is valid once uncommented.
    let c = orinari_config::parse(&uncomment("[[models]]"), "example", no_env()).unwrap();
    assert_eq!(c.models.len(), 2);
    assert!(c.models[1].upstream.is_some());
}

#[test]
fn backup_settings_are_typed_and_checked() {
    let c = ok(
        "[backup]\ninterval = \"10m\"\nretention = \"3d\"\ndestinations = [\"file:///srv/a\", \"file:///mnt/b\"]\nkey_file = \"/etc/orinari/backup.key\"\n",
    );
    let b = c.backup.expect("backup configured");
    assert_eq!(
        b.destinations,
        vec![
            std::path::PathBuf::from("/srv/a"),
            std::path::PathBuf::from("/mnt/b")
        ]
    );
    assert_eq!(b.interval, std::time::Duration::from_secs(600));
    assert_eq!(b.retention, std::time::Duration::from_secs(3 * 86_400));
    assert_eq!(b.verify_interval, std::time::Duration::from_secs(86_400));
    assert_eq!(
        b.key,
        orinari_config::KeySource::File("/etc/orinari/backup.key".into())
    );
    assert_eq!(
        ok("[backup]\ndestinations = [\"file:///srv/a\"]\n")
            .backup
            .unwrap()
            .key,
        orinari_config::KeySource::Env("ORINARI_BACKUP_KEY".into())
    );
    assert!(ok("").backup.is_none());
    for (bad, key) in [
        (
            "destinations = [\"s3://bucket/x\"]",
            "`backup.destinations[0]`",
        ),
        (
            "destinations = [\"file://relative\"]",
            "`backup.destinations[0]`",
        ),
        ("destinations = []", "`backup.destinations`"),
        (
            "destinations = [\"file:///a\"]\nkey_env = \"K\"\nkey_file = \"/k\"",
            "`backup.key_file`",
        ),
        ("retention = \"forever\"", "`backup.retention`"),
    ] {
        let msg = fails(&format!("[backup]\n{bad}\n"));
        assert_contains(&msg, &[key]);
    }
    let msg =
        fails("[storage]\nurl = \"postgres://db/x\"\n[backup]\ndestinations = [\"file:///a\"]\n");
    assert_contains(&msg, &["`backup.destinations`", "PostgreSQL"]);
}

/// CONTRACT.md's grounded model: `[[models]] sources` naming `[[sources]]`,
/// and `[retrieval] budget_ms`.
#[test]
fn a_grounded_model_as_the_contract_writes_it() {
    let dir = std::env::temp_dir().join(format!("orinari-config-grounded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[retrieval]\nbudget_ms = 900\n\n[[sources]]\nname = \"handbook\"\nkind = \"files\"\npath = \"{}\"\ntimeout_ms = 800\n\n[[models]]\nname = \"orinari-docs\"\nbackend = \"local\"\nsources = [\"handbook\"]\n",
        dir.display()
    );
    let c = ok(&text);
    assert_eq!(c.models[0].sources, vec!["handbook".to_string()]);
    assert_eq!(c.retrieval_budget, std::time::Duration::from_millis(900));
    // Not grounded, and the default budget, when unset.
    let plain = ok("[[models]]\nname = \"m\"\nbackend = \"local\"\n");
    assert!(plain.models[0].sources.is_empty());
    assert_eq!(
        plain.retrieval_budget,
        std::time::Duration::from_millis(1500)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_naming_an_unknown_or_repeated_source_is_refused() {
    let msg = fails("[[models]]\nname = \"m\"\nbackend = \"local\"\nsources = [\"wiki\"]\n");
    assert_contains(&msg, &["`models[0].sources`", "`wiki`", "defined: none"]);
    let dir = std::env::temp_dir().join(format!("orinari-config-twice-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let msg = fails(&format!(
        "[[sources]]\nname = \"h\"\nkind = \"files\"\npath = \"{}\"\n\n[[models]]\nname = \"m\"\nbackend = \"local\"\nsources = [\"h\", \"h\"]\n",
        dir.display()
    ));
    assert_contains(&msg, &["`models[0].sources`", "listed twice"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_contains(
        &fails("[retrieval]\nbudget_ms = 0\n"),
        &["`retrieval.budget_ms`", "at least 1"],
    );
    assert_contains(
        &fails("[retrieval]\nbudget_ms = 600000\n"),
        &["`retrieval.budget_ms`", "at most 60000"],
    );
    assert_contains(&fails("[retrieval]\nbudgt_ms = 5\n"), &["budgt_ms"]);
}

#[test]
fn a_response_cache_is_opt_in_with_documented_defaults() {
    let c = ok("[[models]]\nname = \"m\"\nbackend = \"local\"\n");
    assert_eq!(c.models[0].cache, None);
    let c = ok("[[models]]\nname = \"m\"\nbackend = \"local\"\ncache = {}\n");
    let cache = c.models[0].cache.unwrap();
    assert_eq!(cache.ttl, std::time::Duration::from_secs(600));
    assert_eq!(cache.max_bytes, 64 << 20);
    let c = ok(
        "[[models]]\nname = \"m\"\ncache = { ttl = \"30s\", max_mib = 8 }\n[[models.backends]]\nname = \"a\"\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\n",
    );
    let cache = c.models[0].cache.unwrap();
    assert_eq!(cache.ttl, std::time::Duration::from_secs(30));
    assert_eq!(cache.max_bytes, 8 << 20);
    let msg = fails("[[models]]\nname = \"m\"\nbackend = \"local\"\ncache = { ttl = \"soon\" }\n");
    assert_contains(&msg, &["models[0].cache.ttl", "soon"]);
    let msg = fails("[[models]]\nname = \"m\"\nbackend = \"local\"\ncache = { max_mib = 0 }\n");
    assert_contains(&msg, &["models[0].cache.max_mib"]);
    let msg = fails("[[models]]\nname = \"m\"\nbackend = \"local\"\ncache = { size = 1 }\n");
    assert_contains(&msg, &["size"]);
}

#[test]
fn inference_threads_default_to_the_cores_and_take_an_override() {
    assert_eq!(ok("").server.inference_threads, None);
    assert_eq!(
        ok("[server]\ninference_threads = 3\n")
            .server
            .inference_threads,
        Some(3)
    );
    let c = orinari_config::parse(
        "",
        "test.toml",
        env(&[("ORINARI_SERVER_INFERENCE_THREADS", "2")]),
    )
    .unwrap();
    assert_eq!(c.server.inference_threads, Some(2));
}
