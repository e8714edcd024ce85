//! Email notifications and visitor subscriptions against a real SMTP server
//! (Python's aiosmtpd, from the venv `scripts/ensure-test-tools.sh` makes in
//! `target/test-venv`; `ORINARI_TEST_PYTHON` overrides): double opt-in,
//! per-component subscriptions, unsubscribe, and bad input naming its field.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a test's tasks end with the test"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orinari_status::{IncidentInput, StatusError};

struct Smtp {
    child: Child,
    port: u16,
    out: Arc<Mutex<String>>,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> String {
    std::env::var("ORINARI_TEST_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/../../target/test-venv/bin/python",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

async fn smtp_server() -> Smtp {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(python())
        .args([
            "-u",
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("aiosmtpd in target/test-venv (run scripts/ensure-test-tools.sh)");
    let out = Arc::new(Mutex::new(String::new()));
    let stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Smtp { child, port, out };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("aiosmtpd did not start on port {port}");
}

/// The messages received in full so far (aiosmtpd's Debugging handler prints
/// each line by line, so one still being printed has no end marker yet and is
/// left for the next look).
fn messages(s: &Smtp) -> Vec<String> {
    let out = s.out.lock().unwrap().clone();
    out.split("---------- MESSAGE FOLLOWS ----------")
        .skip(1)
        .filter_map(|m| {
            m.split_once("------------ END MESSAGE ------------")
                .map(|(body, _)| body.to_string())
        })
        .collect()
}

async fn wait_messages(s: &Smtp, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let m = messages(s);
        if m.len() >= n {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {n} messages, got {:#?}", messages(s));
}

fn token(message: &str, path: &str) -> String {
    let at = message
        .find(path)
        .unwrap_or_else(|| panic!("no {path} in {message}"));
    message[at + path.len()..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect()
}

#[tokio::test]
async fn double_opt_in_notifications_and_unsubscribe() {
    let smtp = smtp_server().await;
    let toml = format!(
        r#"
[status]
page_name = "Acme"
page_url = "https://status.acme.test/status"
builtin_checks = false
smtp = "127.0.0.1:{}"
smtp_from = "status@acme.test"
[[status.components]]
name = "API"
[[status.components]]
name = "Database"
"#,
        smtp.port
    );
    let svc = Arc::new(common::service(&toml, orinari_store::now_ms()).await);
    assert!(svc.emails_enabled());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(svc.clone().run(stopped));
    let now = orinari_store::now_ms;

    // Bad input names its field; nothing is sent.
    for (email, component, field) in [
        ("not an address", None, "email"),
        ("x@y.z\r\nBcc: a@b.c", None, "email"),
        ("reader@example.org", Some("nope"), "component"),
    ] {
        match svc.subscribe_email(email, component, now()).await {
            Err(StatusError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{email}: {other:?}"),
        }
    }

    // Double opt-in: a confirmation mail, nothing else until confirmed.
    svc.subscribe_email("Reader@Example.org", None, now())
        .await
        .unwrap();
    svc.subscribe_email("reader@example.org", None, now())
        .await
        .unwrap();
    svc.subscribe_email("db-only@example.org", Some("database"), now())
        .await
        .unwrap();
    let m = wait_messages(&smtp, 2).await;
    assert_eq!(
        m.len(),
        2,
        "a second request within 10 minutes sends nothing"
    );
    assert!(m[0].contains("\nTo: reader@example.org"), "{}", m[0]);
    assert!(m[0].contains("Subject: [Acme] Confirm your subscription"));
    let reader = token(&m[0], "/status/subscriptions/confirm?token=");
    let db_only = token(&m[1], "/status/subscriptions/confirm?token=");
    let inc = || IncidentInput {
        name: "API errors".into(),
        message: "We are looking into errors on the API.".into(),
        components: vec![("api".into(), "major_outage".into())],
        ..IncidentInput::default()
    };
    svc.create_incident(inc(), now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        messages(&smtp).len(),
        2,
        "unconfirmed subscribers get nothing"
    );

    assert!(svc.confirm(&reader, now()).await.unwrap());
    assert!(
        !svc.confirm(&reader, now()).await.unwrap(),
        "a token works once"
    );
    assert!(!svc.confirm("forged", now()).await.unwrap());
    assert!(svc.confirm(&db_only, now()).await.unwrap());

    // An API incident: the all-components subscriber hears of it, the
    // database-only one does not.
    svc.create_incident(inc(), now()).await.unwrap();
    let m = wait_messages(&smtp, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(messages(&smtp).len(), 3, "{m:#?}");
    let note = &m[2];
    assert!(note.contains("\nTo: reader@example.org"), "{note}");
    assert!(
        note.contains("Subject: [Acme] API errors: investigating"),
        "{note}"
    );
    assert!(
        note.contains("We are looking into errors on the API."),
        "{note}"
    );
    let unsub = token(note, "/status/subscriptions/unsubscribe?token=");

    // Unsubscribed: nothing more.
    assert!(svc.unsubscribe(&unsub, now()).await.unwrap());
    assert!(!svc.unsubscribe(&unsub, now()).await.unwrap());
    svc.create_incident(inc(), now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(messages(&smtp).len(), 3);

    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn without_smtp_subscriptions_are_refused() {
    let svc = common::service(
        "[status]\nbuiltin_checks = false\n",
        orinari_store::now_ms(),
    )
    .await;
    assert!(!svc.emails_enabled());
    match svc.subscribe_email("a@example.org", None, 0).await {
        Err(StatusError::Invalid { field, .. }) => assert_eq!(field, "email"),
        other => panic!("{other:?}"),
    }
}
