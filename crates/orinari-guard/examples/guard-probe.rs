//! Screen each line of standard input and print the verdict (for checking a
//! list of prompts, e.g. the ones other tests send, against false positives).
//! With `ORINARI_EMBED_MODEL_PATH` set (`scripts/fetch-embed-model.sh`) the
//! guard runs with its sentence encoder, as the server does once the model
//! is installed; without it, on the n-gram model alone.
//! `cargo run --release -p orinari-guard --example guard-probe [user|tool|retrieved] < prompts.txt`
//! (the channel: user messages unless named).
#![allow(clippy::print_stdout, reason = "a command-line tool")]

mod common;

use std::io::BufRead;

use orinari_guard::Channel;

fn main() -> Result<(), String> {
    let mut guard = orinari_guard::Guard::new().map_err(|e| e.to_string())?;
    if std::env::var_os("ORINARI_EMBED_MODEL_PATH").is_some() {
        guard = guard
            .with_encoder(common::Mini::load(false)?)
            .map_err(|e| e.to_string())?;
    }
    let channel = match std::env::args().nth(1) {
        None => Channel::User,
        Some(name) => Channel::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| format!("unknown channel {name:?}: user, tool or retrieved"))?,
    };
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let v = guard.screen_as(channel, &line);
        let verdict = v.rule.unwrap_or("-");
        println!("{:.3}\t{verdict}\t{line}", v.score);
    }
    Ok(())
}
