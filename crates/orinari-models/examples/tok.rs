//! Print token ids of a chat prompt (debug aid).
fn main() {
    let v =
        orinari_models::local::load_vocab(&orinari_models::local::default_model_path()).unwrap();
    let ids = v
        .encode_chat(&[orinari_models::Message {
            role: "user".into(),
            content: "What is the capital of France? 12345".into(),
        }])
        .unwrap();
    println!("{ids:?}");
    let s: Vec<String> = ids
        .iter()
        .map(|&i| String::from_utf8_lossy(v.tokenizer.token_bytes(i)).into_owned())
        .collect();
    println!("{s:?}");
}
