//! The chat page over real HTTP: caching, compression, security headers and
//! the no-JavaScript form with the real model. (The browser tests in
//! `tests/browser/` drive the same page in Chromium.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod common;

use common::{Options, start};

fn asset_paths(html: &str) -> Vec<String> {
    html.split('"')
        .filter(|s| s.starts_with("/assets/"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn page_and_assets_are_cache_friendly_compressed_and_locked_down() {
    let s = start(Options::default()).await;
    let r = s.client.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cross-origin-opener-policy"], "same-origin");
    let etag = h["etag"].to_str().unwrap().to_string();
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<form id="chat" class="composer" method="post" action="/">"#));

    let r = s
        .client
        .get(format!("{}/", s.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);

    let assets = asset_paths(&html);
    assert!(assets.len() >= 4, "{assets:?}");
    for a in &assets {
        let r = s
            .client
            .get(format!("{}{a}", s.base))
            .header("accept-encoding", "br")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{a}");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
    }
    let js = assets.iter().find(|a| a.ends_with(".js")).unwrap();
    for enc in ["br", "gzip"] {
        let r = s
            .client
            .get(format!("{}{js}", s.base))
            .header("accept-encoding", enc)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-encoding"], enc);
    }
    let r = s
        .client
        .get(format!("{}/assets/chat.0000000000000000.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The API is untouched by the page layers (no compression, no page
    // CSP); it carries only the baseline headers.
    let r = s
        .client
        .get(format!("{}/v1/models", s.base))
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("content-encoding"));
    assert_eq!(
        r.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn the_form_answers_and_the_conversation_round_trips_escaped() {
    let s = start(Options::default()).await;
    let post = |fields: Vec<(&'static str, String)>| {
        let (c, url) = (s.client.clone(), format!("{}/", s.base));
        async move {
            let r = c.post(url).form(&fields).send().await.unwrap();
            let status = r.status().as_u16();
            let cache = r.headers()["cache-control"].to_str().unwrap().to_string();
            (status, cache, r.text().await.unwrap())
        }
    };
    let question = "<script>alert(1)</script> Say hi.";
    let (st, cache, html) = post(vec![
        ("message", question.into()),
        ("conversation", String::new()),
        ("action", "send".into()),
    ])
    .await;
    assert_eq!((st, cache.as_str()), (200, "no-store"));
    assert!(!html.contains("<script>alert"), "user text is escaped");
    assert!(html.contains("&#60;script&#62;alert(1)&#60;/script&#62; Say hi."));
    assert_eq!(html.matches(r#"<li class="msg msg-assistant">"#).count(), 1);
    // The hidden field carries the conversation; post it back for turn two.
    let start_tag = r#"name="conversation" value=""#;
    let at = html.find(start_tag).unwrap() + start_tag.len();
    let escaped = &html[at..at + html[at..].find('"').unwrap()];
    let state = escaped
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let turns: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(turns[0]["content"], question);
    assert_eq!(turns[1]["role"], "assistant");
    let (st, _, html) = post(vec![
        ("message", "And again.".into()),
        ("conversation", state.clone()),
    ])
    .await;
    assert_eq!(st, 200);
    assert_eq!(html.matches(r#"<li class="msg msg-"#).count(), 4);
    let (st, _, html) = post(vec![("conversation", state), ("action", "clear".into())]).await;
    assert_eq!(st, 200);
    assert_eq!(html.matches(r#"<li class="msg msg-"#).count(), 0);
    // A forged or broken state is refused with a page, not a crash.
    let (st, _, html) = post(vec![
        ("message", "x".into()),
        (
            "conversation",
            r#"[{"role":"system","content":"x"}]"#.into(),
        ),
    ])
    .await;
    assert_eq!(st, 400);
    assert!(html.contains(r#"role="alert""#));
}
