//! `cargo xtask package`: the Debian package an operator installs, built
//! with `dpkg-deb` from the release binaries (the eBPF object is embedded
//! in `s2s-gateway`), the example config as a conffile, the systemd unit,
//! and man pages and shell completions generated from the binaries' clap
//! definitions. `check` installs it on this machine with apt-get, verifies
//! the unit with `systemd-analyze verify`, starts the installed daemon the
//! way systemd would (`Type=notify`: it must say READY=1) and purges it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use labkit::Ns;

use crate::util::{self, output, sh, step, workspace_root};

const NAME: &str = "s2s-gateway";

/// Builds the package; returns the path of the `.deb`.
pub fn build() -> anyhow::Result<PathBuf> {
    util::build(true)?;
    step("package: staging the files");
    let root = workspace_root();
    let release = root.join("target/release");
    let out_dir = root.join("target/package");
    let stage = out_dir.join("root");
    let _ = std::fs::remove_dir_all(&stage);
    let version = env!("CARGO_PKG_VERSION");
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let put = |rel: &str, bytes: &[u8], mode: u32| -> anyhow::Result<()> {
        let path = stage.join(rel);
        std::fs::create_dir_all(path.parent().context("no parent")?)?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    for bin in ["s2s-gateway", "s2sctl"] {
        let bytes = std::fs::read(release.join(bin))
            .with_context(|| format!("reading target/release/{bin}"))?;
        put(&format!("usr/bin/{bin}"), &bytes, 0o755)?;
        // The release profile keeps debug info for profiling; the package
        // does not need it.
        sh(Command::new("strip")
            .arg("--strip-debug")
            .arg(stage.join(format!("usr/bin/{bin}"))))?;
    }
    // The example config holds example tokens: root only.
    put(
        "etc/s2s-gateway/gateway.toml",
        &std::fs::read(root.join("config/gateway.toml"))?,
        0o600,
    )?;
    put(
        "lib/systemd/system/s2s-gateway.service",
        &std::fs::read(root.join("config/systemd/s2s-gateway.service"))?,
        0o644,
    )?;
    // Man pages and completions from the binaries themselves.
    for (bin, section) in [("s2s-gateway", "8"), ("s2sctl", "1")] {
        let exe = release.join(bin);
        let page = output(Command::new(&exe).arg("__man"))?;
        let gz = gzip(page.as_bytes())?;
        put(
            &format!("usr/share/man/man{section}/{bin}.{section}.gz"),
            &gz,
            0o644,
        )?;
        for (shell, rel) in [
            (
                "bash",
                format!("usr/share/bash-completion/completions/{bin}"),
            ),
            ("zsh", format!("usr/share/zsh/vendor-completions/_{bin}")),
            (
                "fish",
                format!("usr/share/fish/vendor_completions.d/{bin}.fish"),
            ),
        ] {
            let script = output(Command::new(&exe).args(["__completions", shell]))?;
            put(&rel, script.as_bytes(), 0o644)?;
        }
    }
    put(
        "usr/share/doc/s2s-gateway/copyright",
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: {NAME}\nFiles: *\nLicense: Apache-2.0\n \
             On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n"
        )
        .as_bytes(),
        0o644,
    )?;
    put(
        "DEBIAN/conffiles",
        b"/etc/s2s-gateway/gateway.toml\n",
        0o644,
    )?;
    put(
        "DEBIAN/postinst",
        b"#!/bin/sh\nset -e\n\
          # Not enabled or started on a first install: edit\n\
          # /etc/s2s-gateway/gateway.toml first, then systemctl enable --now s2s-gateway\n\
          if [ -d /run/systemd/system ]; then\n\
          \tsystemctl daemon-reload || true\n\
          \t# An upgrade restarts a running daemon onto the new files: SIGTERM is a\n\
          \t# restart (no IKE DELETE, SAs resumed from the state file).\n\
          \tif [ \"$1\" = configure ] && [ -n \"$2\" ]; then\n\
          \t\tsystemctl try-restart s2s-gateway.service || true\n\
          \tfi\n\
          fi\n",
        0o755,
    )?;
    put(
        "DEBIAN/prerm",
        b"#!/bin/sh\nset -e\n\
          # Removal takes the host out of service: a drain (SIGUSR2: IKE SAs\n\
          # deleted toward the customers, TUNs and XDP programs removed), not\n\
          # the restart that SIGTERM is. An upgrade stops nothing here.\n\
          if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then\n\
          \tif systemctl is-active -q s2s-gateway.service; then\n\
          \t\tsystemctl kill -s SIGUSR2 --kill-whom=main s2s-gateway.service || true\n\
          \tfi\n\
          \tsystemctl stop s2s-gateway.service || true\nfi\n",
        0o755,
    )?;
    put(
        "DEBIAN/postrm",
        b"#!/bin/sh\nset -e\n\
          if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n\
          if [ \"$1\" = purge ]; then rm -rf /var/lib/s2s-gateway; fi\n",
        0o755,
    )?;
    // The maintainer scripts' systemd branches do not run on a machine
    // without systemd (like this one): at least their syntax is checked.
    for script in ["postinst", "prerm", "postrm"] {
        sh(Command::new("sh")
            .arg("-n")
            .arg(stage.join("DEBIAN").join(script)))
        .with_context(|| format!("the package's {script} is not valid sh"))?;
    }
    let size_kib = output(Command::new("du").args(["-sk"]).arg(&stage))?
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .to_owned();
    put(
        "DEBIAN/control",
        format!(
            "Package: {NAME}\nVersion: {version}\nArchitecture: {arch}\n\
             Maintainer: s2s-gateway developers <s2s-gateway@example.org>\n\
             Installed-Size: {size_kib}\nDepends: libc6, iproute2\nSection: net\nPriority: optional\n\
             Homepage: https://example.org/s2s-gateway\n\
             Description: XDP-accelerated site-to-site IPsec VPN gateway\n \
             IKEv2 with pre-shared keys, ESP on an eBPF/XDP fast path, BGP over the\n \
             tunnels, and the Scaleway Site-to-Site VPN API (s2sctl).\n"
        )
        .as_bytes(),
        0o644,
    )?;
    let deb = out_dir.join(format!("{NAME}_{version}_{arch}.deb"));
    let _ = std::fs::remove_file(&deb);
    sh(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&stage)
        .arg(&deb))?;
    println!("package: {}", deb.display());
    Ok(deb)
}

fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("gzip")?;
    child.stdin.take().context("stdin")?.write_all(bytes)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed");
    }
    Ok(out.stdout)
}

/// Whether the package is installed on this machine.
pub fn installed() -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f", "${Status}", NAME]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

/// The package `build` made for this version, if it exists.
pub fn built() -> Option<PathBuf> {
    let dir = workspace_root().join("target/package");
    let prefix = format!("{NAME}_{}_", env!("CARGO_PKG_VERSION"));
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
}

/// The package installed with apt-get, purged when dropped (also on
/// failure).
pub struct Installed {
    deb: PathBuf,
}

impl Installed {
    pub fn install(deb: &Path) -> anyhow::Result<Self> {
        let me = Self {
            deb: deb.to_path_buf(),
        };
        apt_install(deb, false)?;
        Ok(me)
    }

    /// Installs the same package again over itself: its files are
    /// replaced and its maintainer scripts run as in an upgrade.
    pub fn reinstall(&self) -> anyhow::Result<()> {
        apt_install(&self.deb, true)
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        purge();
    }
}

fn apt_install(deb: &Path, reinstall: bool) -> anyhow::Result<()> {
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-q"]);
    if reinstall {
        cmd.arg("--reinstall");
    }
    let out = cmd
        .arg(deb)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .context("apt-get")?;
    if !out.status.success() {
        bail!(
            "apt-get install {} failed:\n{}{}",
            deb.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn purge() {
    let _ = Command::new("apt-get")
        .args(["purge", "-y", "-q", NAME])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
}

/// Purges the package and removes the test namespace, also on failure.
struct Cleanup {
    prefix: &'static str,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        purge();
        labkit::teardown(self.prefix);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Installs `deb`, verifies and starts what it installed, then purges it.
pub fn check(deb: &Path) -> anyhow::Result<()> {
    if installed() {
        println!(
            "package: {NAME} is installed on this machine already: not replacing it, check skipped"
        );
        return Ok(());
    }
    const PREFIX: &str = "s2spkg-";
    const NS: Ns = Ns::new(PREFIX, "gw");
    let dir = std::env::temp_dir().join("s2s-package-check");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    labkit::teardown(PREFIX);
    let cleanup = Cleanup {
        prefix: PREFIX,
        dir: dir.clone(),
    };
    step("package: apt-get install ./s2s-gateway_*.deb");
    apt_install(deb, false)?;
    for f in [
        "/usr/bin/s2s-gateway",
        "/usr/bin/s2sctl",
        "/etc/s2s-gateway/gateway.toml",
        "/lib/systemd/system/s2s-gateway.service",
        "/usr/share/man/man8/s2s-gateway.8.gz",
        "/usr/share/man/man1/s2sctl.1.gz",
        "/usr/share/bash-completion/completions/s2sctl",
    ] {
        if !Path::new(f).exists() {
            bail!("the package did not install {f}");
        }
    }
    step("package: systemd-analyze verify s2s-gateway.service");
    let verify = Command::new("systemd-analyze")
        .args(["verify", "/lib/systemd/system/s2s-gateway.service"])
        .output()?;
    let said = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    if !verify.status.success() {
        bail!("systemd-analyze verify failed:\n{said}");
    }
    if let Some(l) = said.lines().find(|l| l.contains("s2s-gateway.service")) {
        bail!("systemd-analyze verify warns about the unit: {l}");
    }
    println!("  systemd-analyze verify: ok");
    sh(Command::new("/usr/bin/s2s-gateway").args([
        "check-config",
        "--config",
        "/etc/s2s-gateway/gateway.toml",
    ]))?;
    step("package: the installed daemon, started as systemd would (Type=notify)");
    NS.create()?;
    NS.exec(&[
        "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "lan0",
    ])?;
    for dev in ["lo", "wan0", "lan0"] {
        NS.exec(&["ip", "link", "set", dev, "up"])?;
    }
    let token = "package-check-token-0123456789";
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nstate_dir = \"{}\"\n[interfaces]\nwan = \"wan0\"\nlan = \"lan0\"\n\
             [api]\nlisten = \"127.0.0.1:8080\"\ntokens = [\"{token}\"]\n\
             metrics_listen = \"127.0.0.1:9108\"\n\
             [[gateway_types]]\nname = \"VGW-S\"\nbandwidth = 100000000\nallowed_connections = 1\n",
            dir.join("state").display()
        ),
    )?;
    let sock_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path)?;
    notify.set_read_timeout(Some(Duration::from_secs(1)))?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let mut daemon = NS
        .cmd("/usr/bin/s2s-gateway")
        .args(["run", "--no-xdp", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 512];
    let ready = loop {
        if let Ok(n) = notify.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == "READY=1") {
                break msg;
            }
        }
        if let Some(st) = daemon.try_wait()? {
            bail!(
                "the installed daemon exited ({st}) before READY=1:\n{}",
                std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            let _ = daemon.kill();
            bail!("no READY=1 from the installed daemon within 60 s");
        }
    };
    println!("  the daemon said: {}", ready.replace('\n', "; "));
    let types = NS.out(&[
        "/usr/bin/s2sctl",
        "--api-url",
        "http://127.0.0.1:8080",
        "--token",
        token,
        "gateway-type",
        "list",
    ])?;
    if !types.contains("VGW-S") {
        bail!("the installed s2sctl did not list the gateway types:\n{types}");
    }
    println!("  the installed s2sctl lists the gateway types");
    labkit::terminate(&mut daemon, "s2s-gateway", Duration::from_secs(20));
    println!("  stopped (SIGTERM)");
    step("package: apt-get purge s2s-gateway");
    drop(cleanup);
    if Path::new("/usr/bin/s2s-gateway").exists() || installed() {
        bail!("the package is still installed after apt-get purge");
    }
    println!("package: installed, verified, started and purged");
    Ok(())
}
