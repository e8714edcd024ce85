//! Process resource usage, read from `/proc` at each scrape (nothing runs in
//! between): CPU seconds, resident and virtual memory, open and maximum file
//! descriptors, start time, and the network bytes of the process's network
//! namespace. Names follow Prometheus's process-collector conventions so
//! existing dashboards work; on systems without `/proc` nothing is exported.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Registered once; reads `/proc/self` when scraped.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: f64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: f64,
    /// Open file descriptors.
    pub open_fds: f64,
    /// The soft limit on file descriptors.
    pub max_fds: f64,
    /// Unix seconds the process started.
    pub start_time: f64,
    /// Bytes received on every interface but loopback.
    pub network_receive_bytes: f64,
    /// Bytes sent on every interface but loopback.
    pub network_transmit_bytes: f64,
}

/// Clock ticks per second for `/proc/self/stat` (USER_HZ is 100 on every
/// Linux architecture Rust supports).
const TICKS: f64 = 100.0;
const PAGE: f64 = 4096.0;

/// Read the current usage; `None` without `/proc`.
pub fn read() -> Option<Usage> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at state.
    let rest = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // state=0 … utime=11 stime=12 … starttime=19 vsize=20 rss=21
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as f64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let (rx, tx) = std::fs::read_to_string("/proc/self/net/dev")
        .map(|s| network(&s))
        .unwrap_or((0.0, 0.0));
    Some(Usage {
        cpu_seconds: (num(11) + num(12)) / TICKS,
        resident_bytes: num(21) * PAGE,
        virtual_bytes: num(20),
        open_fds,
        max_fds,
        start_time: boot.map_or(0.0, |b| b + num(19) / TICKS),
        network_receive_bytes: rx,
        network_transmit_bytes: tx,
    })
}

/// Sum of receive and transmit bytes in `/proc/net/dev`, loopback excluded.
pub fn network(dev: &str) -> (f64, f64) {
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .fold((0.0, 0.0), |(rx, tx), (_, v)| {
            let f: Vec<f64> = v
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (
                rx + f.first().copied().unwrap_or(0.0),
                tx + f.get(8).copied().unwrap_or(0.0),
            )
        })
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: f64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(u) = read() else { return Ok(()) };
        counter(
            &mut e,
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            u.cpu_seconds,
        )?;
        gauge(
            &mut e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            u.resident_bytes,
        )?;
        gauge(
            &mut e,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            u.virtual_bytes,
        )?;
        gauge(
            &mut e,
            "process_open_fds",
            "Open file descriptors",
            u.open_fds,
        )?;
        gauge(
            &mut e,
            "process_max_fds",
            "Maximum number of open file descriptors",
            u.max_fds,
        )?;
        gauge(
            &mut e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            u.start_time,
        )?;
        counter(
            &mut e,
            "orinari_network_receive_bytes",
            "Bytes received on the process's network interfaces (loopback excluded)",
            u.network_receive_bytes,
        )?;
        counter(
            &mut e,
            "orinari_network_transmit_bytes",
            "Bytes sent on the process's network interfaces (loopback excluded)",
            u.network_transmit_bytes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let u = read().unwrap();
        assert!(u.resident_bytes > 1_000_000.0, "{u:?}");
        assert!(u.open_fds >= 3.0 && u.max_fds >= u.open_fds, "{u:?}");
        assert!(u.start_time > 1_600_000_000.0, "{u:?}");
        assert!(u.cpu_seconds >= 0.0);
    }

    #[test]
    fn network_skips_loopback() {
        let dev = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 500 5 0 0 0 0 0 0 500 5 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n";
        assert_eq!(network(dev), (1000.0, 2000.0));
    }
}
