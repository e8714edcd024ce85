//! A new `[status]` applied to a running service (what a configuration
//! reload does): a new check is probed at once, a removed one stops, a
//! changed one is probed at its new target, an unchanged one keeps its
//! loop; incidents, history and components stay; alert rules change.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use orinari_status::IncidentInput;

/// A loopback port that counts the connections made to it.
async fn target() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            drop(conn);
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, n)
}

fn check(name: &str, port: u16) -> String {
    format!(
        "[[status.checks]]\nname = \"{name}\"\nurl = \"tcp://127.0.0.1:{port}\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\n\n"
    )
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let by = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < by, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn checks_start_stop_and_change_while_history_and_incidents_stay() {
    let (a, a_hits) = target().await;
    let (b, b_hits) = target().await;
    let (c, c_hits) = target().await;
    let head = "[status]\nbuiltin_checks = false\n\n";
    let first = format!("{head}{}{}", check("A", a), check("B", b));
    let svc = Arc::new(common::service(&first, orinari_store::now_ms()).await);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(svc.clone().run(stopped));
    until("both checks decided", || svc.probe_states().len() == 2).await;
    let incident = svc
        .create_incident(
            IncidentInput {
                name: "Slow B".into(),
                status: None,
                impact: None,
                message: "Looking".into(),
                components: vec![("b".into(), "degraded_performance".into())],
            },
            orinari_store::now_ms(),
        )
        .await
        .unwrap();

    // A stays as it is, B is removed, C is new.
    let second = format!("{head}{}{}", check("A", a), check("C", c));
    let prepared = svc.prepare(&common::settings(&second)).unwrap();
    svc.apply(prepared, orinari_store::now_ms()).await.unwrap();
    until("the new check probed", || c_hits.load(Ordering::SeqCst) > 0).await;
    until("the new check decided", || {
        svc.probe_states().iter().any(|(id, up)| id == "c" && *up)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b_then = b_hits.load(Ordering::SeqCst);
    let a_then = a_hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        b_hits.load(Ordering::SeqCst),
        b_then,
        "a removed check stops"
    );
    assert!(a_hits.load(Ordering::SeqCst) > a_then, "A probes on");
    let ids: Vec<_> = svc.probe_states().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["a", "c"]);
    // B's component, its history and the incident on it stay.
    let snap = svc.snapshot();
    assert!(snap.component("b").is_some());
    assert!(snap.incidents.iter().any(|i| i.id == incident.id));

    // A changed check (A now probes C's port; C is removed) is probed at its
    // new target only.
    let third = format!("{head}{}", check("A", c));
    let prepared = svc.prepare(&common::settings(&third)).unwrap();
    svc.apply(prepared, orinari_store::now_ms()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_stopped = a_hits.load(Ordering::SeqCst);
    let c_then = c_hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a_hits.load(Ordering::SeqCst), a_stopped, "A's old target");
    assert!(c_hits.load(Ordering::SeqCst) > c_then, "A's new target");
    let ids: Vec<_> = svc.probe_states().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["a"]);

    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the scheduler stops every loop, the new ones too")
        .unwrap();
}

#[tokio::test]
async fn alert_rules_and_connectivity_change_and_bad_targets_change_nothing() {
    let toml = "[status]\nbuiltin_checks = false\n\n[[status.alerts]]\nname = \"Errors\"\nkind = \"error_rate\"\nthreshold = 0.5\nmin_requests = 1\n";
    let svc = common::service(toml, orinari_store::now_ms()).await;
    let next = toml.replace("threshold = 0.5", "threshold = 0.25");
    let prepared = svc.prepare(&common::settings(&next)).unwrap();
    svc.apply(prepared, orinari_store::now_ms()).await.unwrap();
    let now = orinari_store::now_ms();
    for status in [500, 200, 200] {
        svc.record_request("/v1/chat/completions", status, 0.01, now);
    }
    // 1 in 3 is above the new threshold, under the old one.
    svc.evaluate_alerts(now).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(1), async {
        let mut queue = svc.notifier().take_queue().unwrap();
        queue.recv().await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(event["event"], "alert.firing");
    assert_eq!(event["alert"]["threshold"], 0.25);

    // A check whose target does not parse: refused before anything changes.
    let mut bad = common::settings(&format!("{toml}{}", check("D", 1)));
    bad.checks[0].url = "tcp://no-port".into();
    let e = svc.prepare(&bad).unwrap_err();
    assert!(e.to_string().contains("status.checks[0].url"), "{e}");
}
