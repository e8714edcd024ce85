//! The real model (`scripts/fetch-embed-model.sh`, run by `make model`)
//! against vectors of the independent numpy implementation
//! (`bench/embeddings/reference.py`, float64, one text at a time): equal
//! within 1e-4 cosine distance, alone and in a padded batch; the int8
//! encoder near them; token-id inputs, truncation, and the lazy async
//! embedder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use orinari_embed::{DIMENSIONS, EmbedError, Embedder, Encoder, Input, MAX_TOKENS, Precision};

#[derive(serde::Deserialize)]
struct Reference {
    text: String,
    vector: Vec<f64>,
}

fn references() -> Vec<Reference> {
    serde_json::from_str(include_str!("reference.json")).unwrap()
}

fn encoder() -> Encoder {
    Encoder::load(&orinari_embed::default_model_dir(), Precision::F32)
        .expect("run scripts/fetch-embed-model.sh (make model) first")
}

fn cosine_distance(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

#[test]
fn vectors_match_the_reference_alone_and_batched() {
    let enc = encoder();
    let refs = references();
    let inputs: Vec<Input> = refs.iter().map(|r| Input::Text(r.text.clone())).collect();
    // All together: padded to the longest (a truncated 256-token text).
    let batched = enc.embed(&inputs).unwrap();
    for (r, v) in refs.iter().zip(&batched.vectors) {
        assert_eq!(v.len(), DIMENSIONS);
        let d = cosine_distance(v, &r.vector);
        assert!(d < 1e-4, "{:?}: cosine distance {d}", r.text);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // One at a time: the same vectors (padding changes nothing).
    for (r, v) in refs.iter().zip(&batched.vectors) {
        let alone = enc.embed(&[Input::Text(r.text.clone())]).unwrap();
        let d = cosine_distance(
            &alone.vectors[0],
            &v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>(),
        );
        assert!(d < 1e-6, "{:?}: alone vs batched {d}", r.text);
    }
    // The long text was cut at the model's 256 tokens.
    assert!(batched.tokens as usize <= refs.len() * MAX_TOKENS);
    let long = enc.tokens(0, &inputs[inputs.len() - 1]).unwrap();
    assert_eq!(long.len(), MAX_TOKENS);
}

/// The int8 encoder (the guard's): every reference vector within 0.005
/// cosine distance (measured: at most ~0.001), about the same vectors alone
/// and in a padded batch, an id of its own, and a copy of its own in
/// `shared`. Alone and batched differ more than in f32 (measured: 5e-5):
/// the attention's f32 sums follow the batch's shape in their last bits,
/// and a last bit can move an activation across a quantization step.
#[test]
fn int8_vectors_stay_near_the_reference_and_have_an_id_of_their_own() {
    let dir = orinari_embed::default_model_dir();
    let int8 = Encoder::load(&dir, Precision::Int8).unwrap();
    let refs = references();
    let inputs: Vec<Input> = refs.iter().map(|r| Input::Text(r.text.clone())).collect();
    let batched = int8.embed(&inputs).unwrap();
    let mut worst: f64 = 0.0;
    for (r, v) in refs.iter().zip(&batched.vectors) {
        let d = cosine_distance(v, &r.vector);
        worst = worst.max(d);
        assert!(d < 5e-3, "{:?}: int8 cosine distance {d}", r.text);
        let alone = int8.embed(&[Input::Text(r.text.clone())]).unwrap();
        let d = cosine_distance(
            &alone.vectors[0],
            &v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>(),
        );
        assert!(d < 1e-3, "{:?}: int8 alone vs batched {d}", r.text);
    }
    // Quantized, not the f32 model under another name.
    assert!(worst > 1e-6, "int8 vectors equal the f32 ones: {worst}");
    let f32 = encoder();
    assert!(f32.id().starts_with("all-MiniLM-L6-v2@"), "{}", f32.id());
    assert!(
        int8.id().starts_with("all-MiniLM-L6-v2-int8@"),
        "{}",
        int8.id()
    );
    assert_eq!(f32.id()[17..], int8.id()[22..], "the same files");
    let a = orinari_embed::shared(&dir, Precision::Int8).unwrap();
    let b = orinari_embed::shared(&dir, Precision::F32).unwrap();
    assert!(std::sync::Arc::ptr_eq(
        &a,
        &orinari_embed::shared(&dir, Precision::Int8).unwrap()
    ));
    assert_eq!((a.id(), b.id()), (int8.id(), f32.id()));
}

#[test]
fn token_ids_embed_like_their_text_and_bad_ids_are_named() {
    let enc = encoder();
    let text = Input::Text("A man is eating food.".into());
    let ids = enc.tokens(0, &text).unwrap();
    // Token inputs are given without [CLS] and [SEP].
    let inner = ids[1..ids.len() - 1].to_vec();
    let a = enc.embed(&[text]).unwrap();
    let b = enc.embed(&[Input::Tokens(inner)]).unwrap();
    assert_eq!(a, b);
    let err = enc
        .embed(&[Input::Tokens(vec![1]), Input::Tokens(vec![7, 99_999])])
        .unwrap_err();
    assert!(
        matches!(
            err,
            EmbedError::Token {
                input: 1,
                position: 1,
                id: 99_999,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_embedder_loads_on_first_use_and_shuts_down() {
    let embedder = Embedder::new(orinari_embed::default_model_dir(), 4);
    assert!(embedder.installed());
    let got = embedder
        .embed(vec![Input::Text("Hello, world!".into())])
        .await
        .unwrap();
    let d = cosine_distance(&got.vectors[0], &references()[0].vector);
    assert!(d < 1e-4, "{d}");
    embedder.shutdown();
    assert!(!embedder.ready());
    assert_eq!(
        embedder.embed(vec![Input::Text("x".into())]).await,
        Err(EmbedError::ShuttingDown)
    );
    // A folder without the model: a load error, never a panic.
    let missing = Embedder::new("/nonexistent/orinari-embed".into(), 1);
    assert!(!missing.installed());
    let err = missing
        .embed(vec![Input::Text("x".into())])
        .await
        .unwrap_err();
    assert!(matches!(err, EmbedError::Load(_)), "{err:?}");
}
