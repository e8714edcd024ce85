//! Screen each line of standard input and print the verdict (for checking a
//! list of prompts, e.g. the ones other tests send, against false positives).
//! `cargo run --release -p orinari-guard --example guard-probe < prompts.txt`
#![allow(clippy::print_stdout, reason = "a command-line tool")]

use std::io::BufRead;

fn main() -> Result<(), String> {
    let guard = orinari_guard::Guard::new().map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let v = guard.screen(&line);
        let verdict = v.rule.unwrap_or("-");
        println!("{:.3}\t{verdict}\t{line}", v.score);
    }
    Ok(())
}
