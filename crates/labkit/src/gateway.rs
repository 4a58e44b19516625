//! Our gateway as an end-to-end harness starts it: `s2s-gateway run` in a
//! namespace with a config of the test's, stopped (SIGTERM) when dropped,
//! and its HTTP API and `/metrics` reached from inside that namespace (the
//! API listens on the namespace's loopback). Requests run on a thread that
//! lives in the namespace: typed, through `gateway_api::client` (the
//! server's own wire types; [`with_api`]), or raw ([`Api`]) for the tests
//! that probe error answers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use gateway_api::client::{Client, ClientError};
use serde_json::Value;

/// The region the harness's configs serve.
pub const REGION: &str = "fr-par";

type Job = Box<dyn FnOnce() + Send>;

/// A thread inside a network namespace that runs closures for the caller.
pub struct NsThread {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsThread {
    /// Starts the thread and moves it into `netns`.
    pub fn new(netns: &str) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ok_tx, ok_rx) = mpsc::channel();
        let ns = netns.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("in-{netns}"))
            .spawn(move || {
                let r = crate::enter_netns(&ns);
                let failed = r.is_err();
                let _ = ok_tx.send(r);
                if failed {
                    return;
                }
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        ok_rx
            .recv()
            .map_err(|_| anyhow!("namespace thread ended"))??;
        Ok(Self {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Runs `f` in the namespace and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .ok_or_else(|| anyhow!("namespace thread stopped"))?
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| anyhow!("namespace thread stopped"))?;
        rx.recv().map_err(|_| anyhow!("namespace job panicked"))
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An HTTP response: status and body (JSON when it parses, else a string).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

/// The API of a gateway, from inside its namespace.
pub struct Api {
    ns: NsThread,
    base: String,
    token: String,
}

impl Api {
    /// `base` like `http://127.0.0.1:8080`.
    pub fn new(netns: &str, base: &str, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            ns: NsThread::new(netns)?,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    /// One request; `path` below the s2s-vpn API of [`REGION`] unless it
    /// starts with `/`.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Response> {
        let url = if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}/s2s-vpn/v1alpha1/regions/{REGION}/{path}", self.base)
        };
        let token = self.token.clone();
        let method = method.to_owned();
        self.ns.run(move || request(&method, &url, &token, body))?
    }

    /// A request that must succeed (2xx); returns the body.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let r = self.call(method, path, body)?;
        if !(200..300).contains(&r.status) {
            bail!("{method} {path}: HTTP {}: {}", r.status, r.body);
        }
        Ok(r.body)
    }

    /// The PSK of a connection, through the Secret Manager access call.
    pub fn psk(&self, connection: &Value) -> anyhow::Result<Vec<u8>> {
        let id = connection["secret_id"]
            .as_str()
            .ok_or_else(|| anyhow!("connection without secret_id: {connection}"))?;
        let rev = connection["secret_revision"]
            .as_u64()
            .ok_or_else(|| anyhow!("connection without secret_revision: {connection}"))?;
        let v = self.ok(
            "GET",
            &format!("/secret-manager/v1beta1/regions/{REGION}/secrets/{id}/versions/{rev}/access"),
            None,
        )?;
        let data = v["data"]
            .as_str()
            .ok_or_else(|| anyhow!("secret access without data"))?;
        base64_decode(data).ok_or_else(|| anyhow!("secret data is not base64"))
    }

    /// A plain GET of another listener of the namespace (`/metrics`).
    pub fn get_text(&self, url: &str) -> anyhow::Result<String> {
        let url = url.to_owned();
        self.ns.run(move || -> anyhow::Result<String> {
            Ok(ureq::get(&url)
                .timeout(Duration::from_secs(5))
                .call()?
                .into_string()?)
        })?
    }
}

fn request(method: &str, url: &str, token: &str, body: Option<Value>) -> anyhow::Result<Response> {
    let req = ureq::request(method, url)
        .set("X-Auth-Token", token)
        .timeout(Duration::from_secs(30));
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(anyhow!("{method} {url}: {e}")),
    };
    let status = resp.status();
    let text = resp.into_string()?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Response { status, body })
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Runs `f` with a typed client of the API at `base` in `netns`, on a
/// thread of its own for this call (nothing holds the namespace after).
pub fn with_api<T: Send + 'static>(
    netns: &str,
    base: &str,
    token: &str,
    f: impl FnOnce(&Client) -> Result<T, ClientError> + Send + 'static,
) -> anyhow::Result<T> {
    let client = Client::new(base, token, REGION);
    let ns = NsThread::new(netns)?;
    Ok(ns.run(move || f(&client))??)
}

/// A running `s2s-gateway run`, stopped with SIGTERM when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `bin run --config config` in `netns`, output to `log`.
    pub fn start(bin: &Path, netns: &str, config: &Path, log: &Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// Waits until `api` answers (the daemon serves), failing early if the
    /// daemon exits.
    pub fn wait_ready(&mut self, api: &Api, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.check()?;
            if api
                .call("GET", "vpn-gateway-types", None)
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the gateway's API did not answer within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An error if the daemon has exited.
    pub fn check(&mut self) -> anyhow::Result<()> {
        if let Some(c) = &mut self.child {
            if let Ok(Some(st)) = c.try_wait() {
                bail!("s2s-gateway exited ({st}); log:\n{}", self.log_tail(40));
            }
        }
        Ok(())
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends `signal` (e.g. "HUP", "USR2") to the daemon.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let Some(c) = &self.child else {
            bail!("s2s-gateway is not running");
        };
        crate::sh(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(c.id().to_string()),
        )
    }

    /// Waits until the daemon's log has `n` lines containing `needle`
    /// (polled every 100 ms), failing early if the daemon exits.
    pub fn wait_log(&mut self, needle: &str, n: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            self.check()?;
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.lines().filter(|l| l.contains(needle)).count() >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{needle:?} not logged {n} time(s) within {limit:?}; log:\n{}",
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills it (SIGKILL): a crash, nothing cleaned up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::terminate(&mut c, "s2s-gateway", Duration::from_secs(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counter or gauge value of a Prometheus exposition line that starts with
/// `series` (metric name and labels as printed), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_metrics() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8h").unwrap(), b"hello!");
        assert!(base64_decode("a$==").is_none());
        let text = "# HELP x y\nx_total{a=\"1\"} 5\nx_total{a=\"2\"} 7\n";
        assert_eq!(metric(text, "x_total{a=\"2\"}"), Some(7.0));
        assert_eq!(metric(text, "x_total{a=\"3\"}"), None);
    }
}
