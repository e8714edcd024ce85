//! Zero-downtime upgrade (SIGUSR2, CONTRACT.md "Signals").
//!
//! The running process starts the binary now at its own path with the same
//! arguments and hands it its listening sockets the way systemd's socket
//! activation does (`LISTEN_FDS`, `LISTEN_FDNAMES`, descriptors from 3 on),
//! so the kernel's accept queue is never closed and no connection is
//! refused. The new process says it is ready the way a `Type=notify`
//! service tells systemd (`READY=1` on a datagram socket): the old one
//! listens on a socket of its own, named in `ORINARI_UPGRADE_NOTIFY`. Only
//! then does the old process stop accepting and drain (the SIGTERM path);
//! under systemd it first names the new process the service's main PID.
//! If the new process exits, or is not ready within [`READY_WITHIN`], it is
//! killed and the old one keeps serving, with the reason logged.
//!
//! The new process is not the old one's child: the process the old one
//! starts starts the binary once more, says that process's id
//! (`MAINPID=` on the readiness socket) and exits ([`relaunch_detached`]),
//! so the new process belongs to whoever reaps orphans — under systemd,
//! systemd itself. systemd takes a main PID that is not its own child for
//! an "alien" one ("Supervising process … which is not our child"): it does
//! not wait for it on `systemctl stop` but sends SIGTERM and at once SIGKILL
//! to the whole service, so the drain after an upgrade was cut
//! (`make deploy` showed it; `crates/orinari/tests/cli.rs` checks the
//! parent now).
//!
//! The same code serves systemd socket activation: sockets passed by a
//! `.socket` unit are used instead of binding, and `READY=1` goes to
//! `NOTIFY_SOCKET` once the server accepts.

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use command_fds::{CommandFdExt, FdMapping};
use tokio::net::{TcpListener, UnixDatagram};

/// How long a new process may take to become ready (model load included).
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Where the new process finds the old one's readiness socket.
const NOTIFY_ENV: &str = "ORINARI_UPGRADE_NOTIFY";
/// Set for the process an upgrade starts: it starts the binary once more
/// and exits ([`relaunch_detached`]).
const DETACH_ENV: &str = "ORINARI_UPGRADE_DETACH";
/// How often the old process looks whether the new one is still there.
const ALIVE_EVERY: Duration = Duration::from_millis(50);
/// The first descriptor passed (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// The listening sockets a server was given: by the process it replaces,
/// or by systemd (socket activation).
#[derive(Debug, Default)]
pub struct Inherited {
    /// The plain HTTP listener (`LISTEN_FDNAMES` name `http`, or the only one).
    pub http: Option<std::net::TcpListener>,
    /// The TLS listener (`https`).
    pub https: Option<std::net::TcpListener>,
}

impl Inherited {
    /// The sockets in `LISTEN_FDS` (none when it is not set).
    pub fn from_env() -> anyhow::Result<Self> {
        let mut fds = listenfd::ListenFd::from_env();
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|n| n.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut inherited = Self::default();
        for i in 0..fds.len() {
            let name = names
                .get(i)
                .map_or(if i == 0 { "http" } else { "" }, String::as_str);
            let slot = match name {
                "http" => &mut inherited.http,
                "https" => &mut inherited.https,
                other => anyhow::bail!(
                    "passed socket {i} is named {other:?} (LISTEN_FDNAMES); expected \"http\" or \"https\""
                ),
            };
            let listener = fds
                .take_tcp_listener(i)
                .with_context(|| format!("passed socket {i} ({name}) is not a TCP listener"))?;
            if let Some(l) = listener {
                l.set_nonblocking(true)?;
                *slot = Some(l);
            }
        }
        Ok(inherited)
    }
}

/// What a new process needs from this one: its binary's path and arguments
/// (taken at start, before the file may be replaced) and a copy of each
/// listening socket.
#[derive(Debug)]
pub struct Handover {
    program: PathBuf,
    args: Vec<OsString>,
    sockets: Vec<(&'static str, OwnedFd)>,
}

impl Handover {
    pub fn new(http: &TcpListener, https: Option<&TcpListener>) -> anyhow::Result<Self> {
        let program = std::env::current_exe().context("the path of this binary")?;
        let mut sockets = vec![("http", http.as_fd().try_clone_to_owned()?)];
        if let Some(l) = https {
            sockets.push(("https", l.as_fd().try_clone_to_owned()?));
        }
        Ok(Self {
            program,
            args: std::env::args_os().skip(1).collect(),
            sockets,
        })
    }

    /// Start the new binary with the sockets and wait until it is ready;
    /// its process id. On any failure the new process is gone and this one
    /// serves on.
    pub async fn hand_over(&self) -> anyhow::Result<u32> {
        let socket = ReadinessSocket::bind()?;
        let (notify, socket_path) = (&socket.socket, socket.path.as_path());
        let mut mappings = Vec::with_capacity(self.sockets.len());
        for (i, (_, fd)) in (FIRST_FD..).zip(&self.sockets) {
            mappings.push(FdMapping {
                parent_fd: fd.try_clone()?,
                child_fd: i,
            });
        }
        let names: Vec<&str> = self.sockets.iter().map(|(n, _)| *n).collect();
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env("LISTEN_FDS", self.sockets.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env_remove("LISTEN_PID")
            .env(NOTIFY_ENV, socket_path)
            .env(DETACH_ENV, "1")
            .kill_on_drop(true)
            .fd_mappings(mappings)
            .context("socket descriptors")?;
        // The process started here starts the one that serves and exits;
        // a binary that does not (it ignores DETACH_ENV) serves itself.
        let mut launcher = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))?;
        let mut new = Pending(None);
        let mut launched = false;
        let mut buf = [0u8; 256];
        let outcome = tokio::time::timeout(READY_WITHIN, async {
            loop {
                tokio::select! {
                    status = launcher.wait(), if !launched => {
                        let status = status.context("the new process")?;
                        anyhow::ensure!(
                            status.success(),
                            "the new process exited before it was ready ({status})"
                        );
                        launched = true;
                        // It said the id before it exited.
                        while let Ok(n) = notify.try_recv(&mut buf) {
                            if new.read(&buf[..n], &self.program) {
                                return Ok(());
                            }
                        }
                        anyhow::ensure!(new.0.is_some(), "the new process did not say its process id");
                    }
                    got = notify.recv(&mut buf) => {
                        let n = got.context("the readiness socket")?;
                        if new.read(&buf[..n], &self.program) {
                            return Ok(());
                        }
                    }
                    () = tokio::time::sleep(ALIVE_EVERY), if launched => {
                        if new.0.is_some_and(gone) {
                            anyhow::bail!("the new process exited before it was ready (its log says why)");
                        }
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the new process was not ready within {} s",
                READY_WITHIN.as_secs()
            ))
        });
        if let Err(e) = outcome {
            drop(new);
            let _ = launcher.start_kill();
            let _ = launcher.wait().await;
            return Err(e);
        }
        let pid = match new.0.take() {
            Some(pid) => pid,
            // READY=1 from the process started here: it serves itself and
            // outlives this process (not killed on drop).
            None => {
                let pid = launcher.id().unwrap_or_default();
                tracing::info!(pid, program = %self.program.display(), "upgrade: new process started");
                std::mem::forget(launcher);
                pid
            }
        };
        // Ready: it serves on by itself. Under systemd it becomes the
        // service's main process (`NotifyAccess=all` in the unit).
        notify_systemd(&format!("MAINPID={pid}"));
        Ok(pid)
    }
}

/// The new process until it is ready: its id once known, and killed if the
/// upgrade is given up (a failure, or SIGTERM dropping [`Handover::hand_over`]).
struct Pending(Option<u32>);

impl Pending {
    /// Take in a datagram from the readiness socket: the new process's id
    /// (`MAINPID=`); whether it says `READY=1`.
    fn read(&mut self, datagram: &[u8], program: &Path) -> bool {
        if let Some(pid) = main_pid(datagram)
            && self.0.is_none()
        {
            tracing::info!(pid, program = %program.display(), "upgrade: new process started");
            self.0 = Some(pid);
        }
        ready(datagram)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take()
            && let Ok(pid) = i32::try_from(pid)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Whether process `pid` has exited (gone, or a zombie its new parent has
/// not reaped yet).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        // `pid (comm) state ...`; comm may hold spaces and parentheses.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| matches!(state, "Z" | "X" | "x"))
    })
}

/// The first thing `main` does. In the process an upgrade starts
/// ([`DETACH_ENV`] set), start this binary once more with the same
/// arguments, environment (without [`DETACH_ENV`]) and descriptors (the
/// passed sockets are not close-on-exec), tell the old process the new
/// one's id (`MAINPID=`) and exit: the new process, whose parent has gone,
/// belongs to whoever reaps orphans (systemd, under systemd), not to the
/// process it replaces. `None` where this is not such a process.
pub fn relaunch_detached() -> Option<ExitCode> {
    std::env::var_os(DETACH_ENV)?;
    let started = std::env::current_exe().and_then(|program| {
        std::process::Command::new(program)
            .args(std::env::args_os().skip(1))
            .env_remove(DETACH_ENV)
            .spawn()
    });
    match started {
        Ok(mut child) => {
            let message = format!("MAINPID={}", child.id());
            if let Some(path) = std::env::var_os(NOTIFY_ENV)
                && let Err(e) = send(Path::new(&path), &message)
            {
                // The old process would not know it: stop it, the old one
                // serves on.
                eprintln!("error: upgrade: cannot tell the old process the new one's id: {e}");
                let _ = child.kill();
                let _ = child.wait();
                return Some(ExitCode::from(2));
            }
            // Not waited for: it outlives this process.
            drop(child);
            Some(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: upgrade: cannot start the new process: {e}");
            Some(ExitCode::from(2))
        }
    }
}

/// `orinari serve --upgrade`: ask the server listening on `listen` to
/// upgrade (SIGUSR2, the same path) and wait for the outcome. The server is
/// found by its listening socket (the `/proc/net/tcp` inode and the process
/// holding it, as `ss -p` finds it), so no pid file is needed. While the new
/// process starts both hold the socket; the handover is done when the old
/// one has let go of it. Returns the old and the new process ids.
pub fn request(listen: std::net::SocketAddr) -> anyhow::Result<(u32, u32)> {
    let inode = listening_inode(listen)?.with_context(|| {
        format!("nothing listens on {listen} (is `orinari serve` running with this configuration?)")
    })?;
    let old = match holders(inode).as_slice() {
        [] => anyhow::bail!(
            "no process of this user holds the socket on {listen} (run the upgrade as the server's user)"
        ),
        [pid] => *pid,
        more => anyhow::bail!(
            "{} processes hold the socket on {listen} ({more:?}): an upgrade is already under way",
            more.len()
        ),
    };
    let cmdline = std::fs::read(format!("/proc/{old}/cmdline")).unwrap_or_default();
    anyhow::ensure!(
        cmdline.split(|b| *b == 0).any(|arg| arg == b"serve"),
        "the process listening on {listen} (pid {old}) is not `orinari serve`"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(old)?),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .with_context(|| format!("cannot signal pid {old}"))?;
    let deadline = std::time::Instant::now() + READY_WITHIN + Duration::from_secs(5);
    let mut started = None;
    // Polls in a row that saw the new process gone: two, so that the
    // moment the process the server starts hands over to the one that
    // serves ([`relaunch_detached`]) is not taken for an exit.
    let mut missing = 0;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = holders(inode);
        let new = now.iter().copied().find(|p| *p != old);
        if !now.contains(&old) {
            return new.map(|new| (old, new)).with_context(|| {
                format!("pid {old} stopped and nothing listens on {listen} any more")
            });
        }
        match (new, started) {
            (Some(pid), _) => (started, missing) = (Some(pid), 0),
            (None, Some(pid)) => {
                missing += 1;
                anyhow::ensure!(
                    missing < 2,
                    "the new process (pid {pid}) exited before it was ready; pid {old} serves on (its log says why)"
                );
            }
            (None, None) => {}
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no handover within {} s; pid {old} serves on (its log says why)",
            (READY_WITHIN + Duration::from_secs(5)).as_secs()
        );
    }
}

/// The inode of the TCP socket listening on exactly `addr`, from
/// `/proc/net/tcp` or `/proc/net/tcp6`.
fn listening_inode(addr: std::net::SocketAddr) -> anyhow::Result<Option<u64>> {
    let table = if addr.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    let text = std::fs::read_to_string(table).with_context(|| format!("cannot read {table}"))?;
    Ok(text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl, local_address, rem_address, st, ..., inode (the 10th field).
        let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
        (*state == "0A" && proc_address(local)? == addr)
            .then(|| inode.parse().ok())
            .flatten()
    }))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the address
/// as the kernel prints it, each 32-bit word in the machine's byte order.
fn proc_address(field: &str) -> Option<std::net::SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in ip.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

/// The processes (other than this one) holding the socket `inode`, in pid
/// order; processes this user may not inspect are not seen.
fn holders(inode: u64) -> Vec<u32> {
    let target = format!("socket:[{inode}]");
    let me = std::process::id();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
                })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The datagram socket a new process says `READY=1` on, removed with it.
struct ReadinessSocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl ReadinessSocket {
    fn bind() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "orinari-upgrade-{}-{nanos}.sock",
            std::process::id()
        ));
        let socket = UnixDatagram::bind(&path)
            .with_context(|| format!("the readiness socket {}", path.display()))?;
        Ok(Self { socket, path })
    }
}

impl Drop for ReadinessSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a notification datagram says `READY=1`.
fn ready(datagram: &[u8]) -> bool {
    String::from_utf8_lossy(datagram)
        .lines()
        .any(|l| l.trim() == "READY=1")
}

/// The process id in a notification datagram's `MAINPID=`.
fn main_pid(datagram: &[u8]) -> Option<u32> {
    String::from_utf8_lossy(datagram)
        .lines()
        .find_map(|l| l.trim().strip_prefix("MAINPID=")?.parse().ok())
        .filter(|pid| *pid > 0)
}

/// Tell whoever started this process that it accepts connections: the
/// process it replaces (an upgrade) and systemd (`Type=notify`).
pub fn announce_ready() {
    if let Some(path) = std::env::var_os(NOTIFY_ENV) {
        warn_unsent(&path, send(Path::new(&path), "READY=1"));
    }
    notify_systemd("READY=1");
}

/// A message to systemd's `NOTIFY_SOCKET`, where there is one.
fn notify_systemd(message: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        warn_unsent(&path, send(Path::new(&path), message));
    }
}

fn warn_unsent(path: &std::ffi::OsStr, sent: std::io::Result<()>) {
    if let Err(e) = sent {
        tracing::warn!(error = %e, socket = %Path::new(path).display(), "cannot send a readiness notification");
    }
}

fn send(path: &Path, message: &str) -> std::io::Result<()> {
    let s = std::os::unix::net::UnixDatagram::unbound()?;
    match path.as_os_str().as_encoded_bytes().strip_prefix(b"@") {
        // An abstract socket (systemd may use one).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            s.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            s.send_to(message.as_bytes(), path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_addresses_parse_in_machine_byte_order() {
        let v4 = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(
            proc_address(&format!("{v4:08X}:1F90")),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let any6 = format!("{}:0050", "0".repeat(32));
        assert_eq!(proc_address(&any6), Some("[::]:80".parse().unwrap()));
        let one = u32::from_ne_bytes([0, 0, 0, 1]);
        let loopback6 = format!("{}{one:08X}:0050", "0".repeat(24));
        assert_eq!(proc_address(&loopback6), Some("[::1]:80".parse().unwrap()));
        assert_eq!(proc_address("zz:1"), None);
        assert_eq!(proc_address("0100007F"), None);
    }

    #[test]
    fn a_listening_socket_is_found_by_its_exact_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = listening_inode(l.local_addr().unwrap()).unwrap().unwrap();
        // `holders` leaves this process out: nobody else holds it.
        assert!(holders(inode).is_empty());
        drop(l);
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(listening_inode(free).unwrap(), None);
    }

    #[test]
    fn the_new_process_id_is_read_from_mainpid() {
        assert_eq!(main_pid(b"MAINPID=4242"), Some(4242));
        assert_eq!(main_pid(b"STATUS=x\nMAINPID=7\n"), Some(7));
        assert_eq!(main_pid(b"MAINPID=0"), None);
        assert_eq!(main_pid(b"MAINPID=-1"), None);
        assert_eq!(main_pid(b"READY=1"), None);
    }

    #[test]
    fn a_running_process_is_not_gone_and_a_reaped_one_is() {
        assert!(!gone(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(gone(pid));
    }

    #[test]
    fn only_ready_1_counts_as_ready() {
        assert!(ready(b"READY=1"));
        assert!(ready(b"STATUS=loading\nREADY=1\n"));
        assert!(!ready(b"READY=0"));
        assert!(!ready(b"STATUS=READY=1"));
        assert!(!ready(b""));
    }
}
