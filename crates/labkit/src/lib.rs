//! Running commands in the project's network namespaces, for the tools that
//! build whole topologies out of them: the lab (`cargo xtask lab`) and the
//! tunnel benchmark (`cargo xtask bench tunnel`). It owns the namespace
//! handle (a prefix that keeps each tool's namespaces apart, plus a short
//! name), single-queue veth pairs between two namespaces, the removal of
//! every namespace with a prefix (processes inside killed first, since they
//! would keep it alive), and command helpers whose errors name the command
//! and carry its stderr.

pub mod charon;
pub mod gateway;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// `program arg arg ...`, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdout/stderr (progress stays visible); an
/// error if it cannot start or exits non-zero.
pub fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; on a non-zero exit the error carries
/// its stderr.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One iperf3 client run of 3 s from `ns` to `target` (`reverse`: `-R`,
/// the server sends): (received Mbit/s, retransmits of the sender).
/// Bounded: a stalled connection ends with the timeout, not a hang.
pub fn iperf3(ns: Ns, target: &str, reverse: bool) -> anyhow::Result<(f64, u64)> {
    let v = iperf3_json(ns, target, if reverse { &["-R"] } else { &[] })?;
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let retr = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok((bps / 1e6, retr))
}

/// One iperf3 client run of 3 s from `ns` to `target` with `extra`
/// arguments (`-u -b RATE`, `-R`, ...): its JSON report. Bounded by a
/// 30 s timeout; iperf3's own error is the error.
pub fn iperf3_json(ns: Ns, target: &str, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut cmd = ns.cmd("timeout");
    cmd.args([
        "30",
        "iperf3",
        "-c",
        target,
        "-t",
        "3",
        "-J",
        "--connect-timeout",
        "3000",
    ])
    .args(extra);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", describe(&cmd)))?;
    // -J prints one pretty-printed document, not JSON lines.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "iperf3 to {target}: no JSON ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    if let Some(e) = v.get("error").and_then(serde_json::Value::as_str) {
        bail!("iperf3 to {target}: {e}");
    }
    Ok(v)
}

/// A network namespace named `<prefix><short>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ns {
    prefix: &'static str,
    short: &'static str,
}

impl Ns {
    pub const fn new(prefix: &'static str, short: &'static str) -> Self {
        Self { prefix, short }
    }

    /// The name without the prefix (`gw`, `a`, ...).
    pub fn short(self) -> &'static str {
        self.short
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(self) -> String {
        format!("{}{}", self.prefix, self.short)
    }

    /// Creates the namespace and brings its loopback up.
    pub fn create(self) -> anyhow::Result<()> {
        sh(Command::new("ip").args(["netns", "add", &self.name()]))?;
        self.exec(&["ip", "link", "set", "lo", "up"])
    }

    /// `program` run inside the namespace (`ip netns exec`).
    pub fn cmd(self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name(), program]);
        c
    }

    /// Runs `args` (program first) inside the namespace, see [`sh`].
    pub fn exec(self, args: &[&str]) -> anyhow::Result<()> {
        let (program, rest) = args.split_first().context("empty command")?;
        sh(self.cmd(program).args(rest))
    }

    /// Runs `args` inside the namespace and returns stdout, see [`output`].
    pub fn out(self, args: &[&str]) -> anyhow::Result<String> {
        let (program, rest) = args.split_first().context("empty command")?;
        output(self.cmd(program).args(rest))
    }
}

/// Moves the calling thread into the network namespace `name` (as `ip
/// netns` knows it). Threads it spawns afterwards start there too.
pub fn enter_netns(name: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{name}"))
        .with_context(|| format!("network namespace {name}"))?;
    // SAFETY: setns on a valid namespace descriptor, for this thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A veth pair `a_if` (in `a`) — `b_if` (in `b`), one queue each way, so
/// that every AF_XDP socket and XDP program sees all of the traffic.
pub fn veth(a: Ns, a_if: &str, b: Ns, b_if: &str) -> anyhow::Result<()> {
    let (a, b) = (a.name(), b.name());
    let one = ["numtxqueues", "1", "numrxqueues", "1"];
    let mut c = Command::new("ip");
    c.args(["link", "add", a_if, "netns", &a])
        .args(one)
        .args(["type", "veth", "peer", "name", b_if, "netns", &b])
        .args(one);
    sh(&mut c)
}

/// Polls `f` every `interval` until it returns `Some`, for up to `limit`.
/// Stops early on `stop` (Ctrl-C) or when `alive` fails (a daemon died).
/// On timeout the error names `what` and carries `f`'s last error.
pub fn wait_for<T>(
    stop: &AtomicBool,
    what: &str,
    limit: Duration,
    interval: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    let mut last_err = None;
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        alive()?;
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        std::thread::sleep(interval);
    }
    match last_err {
        Some(e) => Err(e.context(format!("timed out waiting for {what}"))),
        None => bail!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Stops a daemon we started: SIGTERM (so it can clean up: our gateway
/// detaches XDP and removes its TUNs), then SIGKILL if it is still there
/// after `grace`. Says so on stderr when it had to kill.
pub fn terminate(child: &mut Child, what: &str, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !matches!(child.try_wait(), Ok(Some(_))) {
        eprintln!("{what} did not stop on SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Removes every namespace whose name starts with `prefix`, killing what
/// still runs inside first. Best effort: never fails.
pub fn teardown(prefix: &str) {
    let list = output(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if !name.starts_with(prefix) {
            continue;
        }
        if let Ok(pids) = output(Command::new("ip").args(["netns", "pids", name])) {
            for pid in pids.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_commands() {
        let ns = Ns::new("s2stest-", "gw");
        assert_eq!(ns.name(), "s2stest-gw");
        assert_eq!(ns.short(), "gw");
        let mut c = ns.cmd("ping");
        c.args(["-c", "1"]);
        assert_eq!(describe(&c), "ip netns exec s2stest-gw ping -c 1");
    }

    #[test]
    fn errors_name_the_command_and_carry_stderr() {
        let e = output(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("oops"), "{msg}");
        assert!(sh(&mut Command::new("false")).is_err());
        assert_eq!(output(Command::new("echo").arg("hi")).unwrap(), "hi\n");
        assert!(Ns::new("p-", "x").exec(&[]).is_err());
    }

    #[test]
    fn wait_for_returns_times_out_and_stops() {
        let stop = AtomicBool::new(false);
        let ms = Duration::from_millis;
        let mut n = 0;
        let got = wait_for(
            &stop,
            "three calls",
            ms(2000),
            ms(1),
            || Ok(()),
            || {
                n += 1;
                Ok((n == 3).then_some(n))
            },
        );
        assert_eq!(got.unwrap(), 3);
        let e = wait_for(
            &stop,
            "never",
            ms(20),
            ms(5),
            || Ok(()),
            || anyhow::Result::<Option<()>>::Err(anyhow::anyhow!("last failure")),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("never") && format!("{e:#}").contains("last failure"));
        let dead = wait_for(
            &stop,
            "x",
            ms(2000),
            ms(1),
            || bail!("daemon died"),
            || Ok(Some(())),
        );
        assert!(dead.unwrap_err().to_string().contains("daemon died"));
        stop.store(true, Ordering::Relaxed);
        let e = wait_for(&stop, "x", ms(2000), ms(1), || Ok(()), || Ok(Some(()))).unwrap_err();
        assert!(e.to_string().contains("interrupted"));
    }

    /// SIGTERM's number on Linux (no libc dependency for one constant).
    const SIGTERM: i32 = 15;

    #[test]
    fn terminate_stops_a_process_that_honours_sigterm() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        terminate(&mut child, "sleep", Duration::from_secs(5));
        let status = child.try_wait().unwrap().expect("stopped");
        // Ended by SIGTERM (15), not by the SIGKILL fallback.
        assert_eq!(status.signal(), Some(SIGTERM));
    }
}
