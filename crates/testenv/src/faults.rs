//! Faults on a real control plane, for the fault tests and `keyseal-bench faults`:
//!
//! * [`PrivatePlane::restart_apiserver`] stops kube-apiserver (SIGTERM) and starts it again with
//!   the same command line, log and pid file, as a node reboot or an upgrade of the API server
//!   would;
//! * [`PrivatePlane::signal`] sends a signal to one component (e.g. `STOP`/`CONT` to etcd: a
//!   storage stall);
//! * [`CuttingProxy`] is a TCP proxy between a client and the API server that can close every
//!   connection through it at once and refuse new ones for a while (a network partition). TLS
//!   passes through untouched: the client still verifies the API server's certificate.
//!
//! Only a [`PrivatePlane`] is faulted: the shared plane belongs to every test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::PrivatePlane;

impl PrivatePlane {
    /// The state directory `scripts/cluster up` was given.
    fn state(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`), from the pid
    /// file `scripts/cluster` keeps.
    pub fn pid(&self, component: &str) -> Result<u32> {
        let file = self.state().join("run").join(format!("{component}.pid"));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{} holds no pid", file.display()))
    }

    /// Sends signal `name` (`STOP`, `CONT`, `TERM`, `KILL`, …) to a component.
    pub fn signal(&self, component: &str, name: &str) -> Result<()> {
        let pid = self.pid(component)?;
        signal_pid(pid, name).with_context(|| format!("signalling {component}"))
    }

    /// The API server's address on loopback (from `<state>/run/ports.env`).
    pub fn apiserver_addr(&self) -> Result<SocketAddr> {
        let ports = std::fs::read_to_string(self.state().join("run/ports.env"))?;
        let port: u16 = ports
            .lines()
            .find_map(|l| l.strip_prefix("APISERVER_PORT="))
            .context("no APISERVER_PORT in ports.env")?
            .trim()
            .parse()?;
        Ok(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Stops kube-apiserver with SIGTERM (its graceful shutdown: it stops accepting requests,
    /// in-flight ones finish, watches end) and SIGKILL after `grace` if it still runs, as the
    /// kubelet does at the end of a pod's termination grace period (kube-apiserver 1.35 then
    /// waits for open connections up to its 60 s shutdown timeout); then starts it again with
    /// the same command line, log file and pid file, detached as `scripts/cluster` starts it (so
    /// `scripts/cluster down` stops the new process). Returns once it answers `/readyz` again,
    /// with the time it was unavailable (from SIGTERM to ready).
    pub async fn restart_apiserver(&self, grace: Duration) -> Result<Duration> {
        let pid = self.pid("kube-apiserver")?;
        let argv = cmdline(pid)?;
        let started = Instant::now();
        signal_pid(pid, "TERM")?;
        if wait_gone(pid, grace).await.is_err() {
            signal_pid(pid, "KILL")?;
            wait_gone(pid, Duration::from_secs(10)).await?;
        }
        let pid_file = self.state().join("run/kube-apiserver.pid");
        let log = self.state().join("logs/kube-apiserver.log");
        respawn_detached(&argv, &pid_file, &log)?;
        self.wait_ready(Duration::from_secs(90)).await?;
        Ok(started.elapsed())
    }

    /// Waits until the API server answers `/readyz` with 200.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let cluster = self.cluster().await?;
        let deadline = Instant::now() + timeout;
        loop {
            let req = http::Request::get("/readyz").body(Vec::new())?;
            let attempt =
                tokio::time::timeout(Duration::from_secs(3), cluster.client().request_text(req))
                    .await;
            if matches!(attempt, Ok(Ok(_))) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "kube-apiserver not ready {timeout:?} after its restart; see {}",
                self.logs().join("kube-apiserver.log").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn signal_pid(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -{name} {pid} failed: {status}");
    Ok(())
}

/// A process's arguments, from `/proc/<pid>/cmdline`.
fn cmdline(pid: u32) -> Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("reading the command line of pid {pid}"))?;
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    ensure!(!argv.is_empty(), "pid {pid} has an empty command line");
    Ok(argv)
}

/// Waits until `pid` no longer exists (the plane's processes are not our children: init reaps
/// them).
async fn wait_gone(pid: u32, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Path::new(&format!("/proc/{pid}")).exists() {
        // A zombie (not reaped yet) has exited too.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("pid {pid} still runs after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Starts `argv` in a session of its own, not as our child (`setsid -f`), its pid written to
/// `pid_file` and its output appended to `log`: what `start` in `scripts/cluster` does.
fn respawn_detached(argv: &[String], pid_file: &Path, log: &Path) -> Result<()> {
    let _ = std::fs::remove_file(pid_file);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let status = Command::new("setsid")
        .args([
            "-f",
            "bash",
            "-c",
            r#"echo $$ >"$1"; shift; exec "$@""#,
            "_",
        ])
        .arg(pid_file)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("running setsid")?;
    ensure!(status.success(), "setsid failed: {status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(pid_file).map_or(true, |s| s.trim().is_empty()) {
        ensure!(Instant::now() < deadline, "{} was not restarted", argv[0]);
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A TCP proxy on 127.0.0.1 in front of `upstream` (the API server) that can cut every
/// connection through it. Stops when dropped.
pub struct CuttingProxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: AbortHandle,
}

#[derive(Default)]
struct ProxyState {
    /// The copy tasks of open connections.
    open: Vec<AbortHandle>,
    /// Until when new connections are closed at once.
    refuse_until: Option<Instant>,
    /// Connections accepted and forwarded so far.
    forwarded: u64,
}

impl CuttingProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let accept = tokio::spawn(accept_loop(listener, upstream, state.clone())).abort_handle();
        Ok(Self {
            addr,
            state,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection (watches, requests in flight, idle keep-alive connections)
    /// and closes new ones at once for `refuse_for`. Returns how many were open.
    pub fn cut(&self, refuse_for: Duration) -> usize {
        let mut state = self.state.lock().expect("proxy state");
        state.refuse_until = Some(Instant::now() + refuse_for);
        let open = std::mem::take(&mut state.open);
        let n = open.iter().filter(|h| !h.is_finished()).count();
        for handle in open {
            handle.abort();
        }
        n
    }

    /// Connections forwarded so far (a client that reconnects after [`Self::cut`] adds to it).
    pub fn forwarded(&self) -> u64 {
        self.state.lock().expect("proxy state").forwarded
    }

    /// Rewrites the `server` of every cluster in the kubeconfig file `path` (JSON or YAML, as
    /// [`crate::ServiceAccountIdentity::kubeconfig`] is) to this proxy, keeping the scheme: the
    /// client then talks TLS to the API server through the proxy.
    pub fn redirect_kubeconfig(&self, path: &Path) -> Result<PathBuf> {
        let text = std::fs::read_to_string(path)?;
        let mut config: serde_json::Value =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let clusters = config["clusters"]
            .as_array_mut()
            .context("the kubeconfig has no clusters")?;
        for cluster in clusters {
            cluster["cluster"]["server"] = format!("https://{}", self.addr).into();
        }
        std::fs::write(path, serde_json::to_vec_pretty(&config)?)?;
        Ok(path.to_owned())
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut(Duration::ZERO);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Arc<Mutex<ProxyState>>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let mut guard = state.lock().expect("proxy state");
        if guard.refuse_until.is_some_and(|t| Instant::now() < t) {
            drop(client); // closed at once: the partition is still on
            continue;
        }
        guard.forwarded += 1;
        guard.open.retain(|h| !h.is_finished());
        guard
            .open
            .push(tokio::spawn(forward(client, upstream)).abort_handle());
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// An echo server behind the proxy: bytes pass both ways; after `cut` the open connection
    /// reads EOF and new connections are closed until the refusal ends.
    #[tokio::test]
    async fn cut_closes_open_connections_and_refuses_for_a_while() -> Result<()> {
        let echo = TcpListener::bind("127.0.0.1:0").await?;
        let upstream = echo.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = CuttingProxy::start(upstream).await?;
        let mut conn = TcpStream::connect(proxy.addr()).await?;
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");

        assert_eq!(proxy.cut(Duration::from_millis(500)), 1);
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the cut connection ends"
        );

        let mut refused = TcpStream::connect(proxy.addr()).await?;
        let n = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "closed during the refusal"
        );

        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut again = TcpStream::connect(proxy.addr()).await?;
        again.write_all(b"pong").await?;
        again.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        assert_eq!(proxy.forwarded(), 2);
        Ok(())
    }
}
