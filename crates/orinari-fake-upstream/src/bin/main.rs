//! `orinari-fake-upstream`: the fake upstream as a process, for benchmarks.
//!
//! `orinari-fake-upstream [--listen ADDR] [--tokens N] [--latency-ms N] [--chunk-delay-ms N]`

use std::net::SocketAddr;
use std::time::Duration;

use orinari_fake_upstream::{Faults, accept_loop, router};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orinari-fake-upstream: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run() -> Result<(), String> {
    let mut listen: SocketAddr = "127.0.0.1:9001".parse().map_err(|e| format!("{e}"))?;
    let mut faults = Faults::default();
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: `{v}` is not a number"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                listen = v
                    .parse()
                    .map_err(|_| format!("--listen: `{v}` is not an address"))?;
            }
            "--tokens" => faults.tokens = number(value()?)? as usize,
            "--latency-ms" => faults.latency = Duration::from_millis(number(value()?)?),
            "--chunk-delay-ms" => faults.chunk_delay = Duration::from_millis(number(value()?)?),
            "--threads" => threads = number(value()?)?.max(1) as usize,
            "--help" | "-h" => {
                eprintln!(
                    "orinari-fake-upstream [--listen ADDR] [--tokens N] [--latency-ms N] [--chunk-delay-ms N] [--threads N]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown flag `{other}` (see --help)")),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        // The bound address: `--listen 127.0.0.1:0` picks a free port.
        eprintln!("fake upstream on http://{bound}/v1");
        let (_stop, rx) = tokio::sync::oneshot::channel();
        accept_loop(listener, router(faults), rx).await;
        Ok(())
    })
}
