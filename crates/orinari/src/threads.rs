//! The embedded models' inference threads (`[server] inference_threads`).
//!
//! candle 0.11 runs every quantized matrix product, and the element-wise
//! maps, on one process-wide pool of its own (`candle_core::utils::
//! barrier_pool`, not rayon: running inference inside a `rayon::ThreadPool`
//! changes nothing there). The pool is sized once, at its first use, from
//! `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else the machine's
//! physical cores — not the cores a cgroup quota or affinity leaves this
//! process. Its workers spin up to `CANDLE_BARRIER_POOL_SPIN_LIMIT` (25,000)
//! times before parking after each product, and the calling thread spins
//! while it waits for them: with more threads than free cores they spin on
//! cores the server's own threads (and a second model) need.
//!
//! The environment is the only handle, and setting a variable in a running
//! process is `unsafe` (edition 2024), which this project forbids. So
//! `serve` re-executes its own binary (`/proc/self/exe`, same arguments,
//! same process id, listening sockets and environment) once, with
//! `CANDLE_NUM_THREADS` set, before it starts anything: when the variable
//! is missing (the default below), or differs from an explicit
//! `inference_threads`. An operator's own `CANDLE_NUM_THREADS` is kept
//! when the config leaves the key at its default.

use std::os::unix::process::CommandExt;

use orinari_config::Config;

/// The variable candle reads.
const VAR: &str = "CANDLE_NUM_THREADS";

/// The default: the cores this process may use (affinity and cgroup
/// quota, as the standard library counts them), less one for the server's
/// own threads, at least 1.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}

/// What `CANDLE_NUM_THREADS` must be for `config`, when it must change.
fn wanted(config: &Config, current: Option<&str>) -> Option<usize> {
    match (config.server.inference_threads, current) {
        (Some(n), Some(c)) if c.trim() == n.to_string() => None,
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(default_threads()),
    }
}

/// Re-execute with the inference threads set, when they must change.
/// Returns only when nothing had to change, or the re-execution failed
/// (then candle sizes its pool as it would have, and the log says so).
pub fn apply(config: &Config) {
    let current = std::env::var(VAR).ok();
    let Some(n) = wanted(config, current.as_deref()) else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "orinari".into());
    let error = std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env(VAR, n.to_string())
        .exec();
    eprintln!(
        "warning: could not restart with {VAR}={n} ({error}); the embedded model uses candle's default threads"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]
    use super::*;

    fn config(text: &str) -> Config {
        orinari_config::parse(text, "t.toml", std::iter::empty()).unwrap()
    }

    #[test]
    fn the_variable_changes_only_when_it_must() {
        let auto = config("");
        assert_eq!(wanted(&auto, None), Some(default_threads()));
        assert_eq!(wanted(&auto, Some("3")), None, "the operator's own");
        let three = config("[server]\ninference_threads = 3\n");
        assert_eq!(wanted(&three, None), Some(3));
        assert_eq!(wanted(&three, Some("1")), Some(3));
        assert_eq!(wanted(&three, Some("3")), None, "set: no loop");
        let zero = config("[server]\ninference_threads = 0\n");
        assert_eq!(wanted(&zero, Some("2")), None, "0 is the default");
        assert!(default_threads() >= 1);
    }
}
