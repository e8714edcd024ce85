//! `orinari-load`: an open-loop HTTP/1.1 load generator for the gateway
//! benchmark (`bench/gateway/run.sh`).
//!
//! `orinari-load URL BODY_FILE [--rate N] [--seconds N] [--connections N] [--mark TEXT]`
//!
//! Requests leave at a fixed rate, evenly spaced: connection `k` of `N`
//! sends at `start + (k + j·N) / rate`, so the arrivals of all connections
//! interleave instead of leaving in bursts (closed-loop tools with a
//! per-worker rate limit, such as `hey -q`, start every worker's clock
//! together and send a burst of one request per worker each period, which
//! measures how fast a gateway drains a burst rather than what it adds to
//! one request). Tokio's timer ticks every millisecond, so at 2,000 req/s
//! requests leave two per tick.
//!
//! Each request's latency runs from the moment it is written to the moment
//! its response is complete; with `--mark TEXT`, the time to the first
//! appearance of `TEXT` in the response (a streamed answer's first token) is
//! reported too. A request whose slot came while its connection was still
//! busy leaves late and is counted in `late` (more than 1 ms behind), and
//! nothing new is sent once the run's time is up, so a target that cannot
//! keep the rate shows it in `late` and in the achieved `rate`.
//!
//! Prints one JSON object: counts, achieved rate, and p50/p90/p99/max in
//! milliseconds.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Options {
    addr: String,
    request: Vec<u8>,
    rate: f64,
    seconds: f64,
    connections: usize,
    mark: Option<Vec<u8>>,
}

#[derive(Default)]
struct Sample {
    total: Vec<f64>,
    mark: Vec<f64>,
    errors: u64,
    late: u64,
}

fn main() -> std::process::ExitCode {
    match options().and_then(run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orinari-load: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: orinari-load URL BODY_FILE [--rate N] [--seconds N] [--connections N] [--mark TEXT]";
    let url = args.next().ok_or(usage)?;
    let body_file = args.next().ok_or(usage)?;
    let rest = url
        .strip_prefix("http://")
        .ok_or("URL: only http:// URLs are supported")?;
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let body = std::fs::read(&body_file).map_err(|e| format!("{body_file}: {e}"))?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let mut o = Options {
        addr: addr.to_string(),
        request,
        rate: 2000.0,
        seconds: 10.0,
        connections: 64,
        mark: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|n| *n > 0.0)
                .ok_or_else(|| format!("{flag}: `{v}` is not a positive number"))
        };
        match flag.as_str() {
            "--rate" => o.rate = number(&value)?,
            "--seconds" => o.seconds = number(&value)?,
            "--connections" => o.connections = number(&value)? as usize,
            "--mark" if value.is_empty() => return Err("--mark: the text is empty".into()),
            "--mark" => o.mark = Some(value.into_bytes()),
            _ => return Err(format!("unknown option {flag}\n{usage}")),
        }
    }
    Ok(o)
}

fn run(o: Options) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let o = std::sync::Arc::new(o);
    let sample = rt.block_on(async {
        let start = tokio::time::Instant::now() + Duration::from_millis(100);
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..o.connections {
            tasks.spawn(connection(o.clone(), k, start));
        }
        let mut all = Sample::default();
        while let Some(s) = tasks.join_next().await {
            let s = s.map_err(|e| e.to_string())?;
            all.total.extend(s.total);
            all.mark.extend(s.mark);
            all.errors += s.errors;
            all.late += s.late;
        }
        Ok::<_, String>(all)
    })?;
    report(&o, sample);
    Ok(())
}

/// One keep-alive connection sending its share of the requests.
async fn connection(o: std::sync::Arc<Options>, k: usize, start: tokio::time::Instant) -> Sample {
    let mut s = Sample::default();
    let period = Duration::from_secs_f64(o.connections as f64 / o.rate);
    let mut due = start + Duration::from_secs_f64(k as f64 / o.rate);
    let end = start + Duration::from_secs_f64(o.seconds);
    let mut conn: Option<TcpStream> = None;
    let mut buf = vec![0u8; 64 * 1024];
    while due < end {
        let now = tokio::time::Instant::now();
        if now >= end {
            // A target slower than the rate: the slots left are not sent.
            break;
        }
        if now > due + Duration::from_millis(1) {
            s.late += 1;
        }
        tokio::time::sleep_until(due).await;
        due += period;
        if conn.is_none() {
            conn = TcpStream::connect(&o.addr).await.ok();
            if let Some(c) = &conn {
                let _ = c.set_nodelay(true);
            }
        }
        let Some(c) = conn.as_mut() else {
            s.errors += 1;
            continue;
        };
        match exchange(c, &o, &mut buf).await {
            Some((total, mark)) => {
                s.total.push(total);
                if let Some(m) = mark {
                    s.mark.push(m);
                }
            }
            None => {
                s.errors += 1;
                conn = None;
            }
        }
    }
    s
}

/// Send one request and read its whole response: (total ms, mark ms), or
/// None on any error or a status other than 200. Each byte is looked at a
/// bounded number of times (the generator shares the cores it measures).
async fn exchange(c: &mut TcpStream, o: &Options, buf: &mut [u8]) -> Option<(f64, Option<f64>)> {
    let sent = Instant::now();
    c.write_all(&o.request).await.ok()?;
    let mut got: Vec<u8> = Vec::with_capacity(4096);
    let mut head: Option<Head> = None;
    let mut mark_at = None;
    loop {
        let n = c.read(buf).await.ok()?;
        if n == 0 {
            return None;
        }
        // Only the new bytes (and the few before them a match could span).
        let from = got.len();
        got.extend_from_slice(&buf[..n]);
        if mark_at.is_none()
            && let Some(m) = &o.mark
            && got[from.saturating_sub(m.len() - 1)..]
                .windows(m.len())
                .any(|w| w == m.as_slice())
        {
            mark_at = Some(ms(sent.elapsed()));
        }
        if head.is_none() {
            head = Head::parse(&got);
        }
        let Some(h) = &head else { continue };
        let body = &got[h.len..];
        let done = match h.length {
            Some(len) => body.len() >= len,
            None => body.ends_with(b"0\r\n\r\n"),
        };
        if done {
            return h.ok.then(|| (ms(sent.elapsed()), mark_at));
        }
    }
}

/// A response head: its length, whether it is a 200, and the body's length
/// (`None`: chunked, ends with the zero-size chunk).
struct Head {
    len: usize,
    ok: bool,
    length: Option<usize>,
}

impl Head {
    /// The head at the start of `r`, once all of it is there.
    fn parse(r: &[u8]) -> Option<Head> {
        let len = r.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let text = std::str::from_utf8(&r[..len]).ok()?.to_ascii_lowercase();
        let length = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = text.contains("transfer-encoding: chunked");
        Some(Head {
            len,
            // Neither a length nor chunks: nothing to wait for, a failure.
            ok: text.starts_with("http/1.1 200") && (length.is_some() || chunked),
            length: length.or(if chunked { None } else { Some(0) }),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentiles(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "null".into();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        r#"{{"p50":{:.3},"p90":{:.3},"p99":{:.3},"max":{:.3}}}"#,
        at(0.5),
        at(0.9),
        at(0.99),
        v[v.len() - 1]
    )
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
fn report(o: &Options, mut s: Sample) {
    let done = s.total.len();
    println!(
        r#"{{"requests":{done},"errors":{},"late":{},"rate":{:.1},"total_ms":{},"mark_ms":{}}}"#,
        s.errors,
        s.late,
        done as f64 / o.seconds,
        percentiles(&mut s.total),
        percentiles(&mut s.mark)
    );
}
