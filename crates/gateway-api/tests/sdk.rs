//! Drives `s2s-apiserver` with the official Scaleway Python SDK
//! (`scaleway==2.12.0`, installed into a venv under the target dir), kills
//! the server with SIGKILL right after an acknowledged write, restarts it
//! and checks everything survived; then two tenants' keys, each confined
//! to its project, drive it side by side. Needs python3 and PyPI (first run only),
//! hence ignored in the plain offline `cargo test`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "11111111-1111-1111-1111-111111111111";
const SDK: &str = "scaleway==2.12.0";

/// Kills the server on drop, even if the test panics.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn venv() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
    let py = dir.join("bin/python3");
    let have = py.exists()
        && Command::new(&py)
            .args(["-c", "import scaleway, importlib.metadata as m; assert m.version('scaleway') == '2.12.0'"])
            .status()
            .is_ok_and(|s| s.success());
    if !have {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .expect("python3 -m venv");
        assert!(st.success(), "creating the venv failed");
        let st = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", SDK])
            .status()
            .expect("pip install");
        assert!(st.success(), "pip install {SDK} failed");
    }
    py
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn write_config(dir: &Path, port: u16) -> PathBuf {
    let text = format!(
        r#"
[gateway]
region = "fr-par"
state_dir = "{state}"

[interfaces]
wan = "wan0"
lan = "lan0"

[api]
listen = "127.0.0.1:{port}"
tokens = ["{TOKEN}"]

# Two tenants for the `tenants` phase, each confined to its project.
[[api.keys]]
token = "a5a5a5a5-5555-4555-8555-55555555555a"
organization_id = "aaaaaaaa-0000-4000-8000-00000000000a"
projects = ["aaaaaaaa-1111-4111-8111-111111111111"]

[[api.keys]]
token = "b5b5b5b5-5555-4555-8555-55555555555b"
organization_id = "bbbbbbbb-0000-4000-8000-00000000000b"
projects = ["bbbbbbbb-2222-4222-8222-222222222222"]

[[gateway_types]]
name = "VGW-S"
bandwidth = 100000000
allowed_connections = 2

[[gateway_types]]
name = "VGW-M"
bandwidth = 1000000000
allowed_connections = 10

[[private_networks]]
id = "8a6f4e3c-0b1d-4c6e-9f5a-2d7b8c9e0f11"
interface = "lan0"
ipv4_subnet = "198.51.100.0/24"
ipv6_subnet = "2001:db8:100::/64"

[[private_networks]]
id = "9b7f5f4d-1c2e-4d7f-8a6b-3e8c9d0f1a22"
interface = "lan1"
ipv4_subnet = "198.51.100.128/25"

[[public_ips]]
id = "5b3e2a10-7c4d-4e8f-a1b2-c3d4e5f60718"
address = "192.0.2.1"

[[public_ips]]
id = "6c4f3b21-8d5e-4f90-b2c3-d4e5f6071829"
address = "2001:db8::1"

[[public_ips]]
id = "7d504c32-9e6f-4a01-83d4-e5f607182930"
address = "192.0.2.2"

[[public_ips]]
id = "8e615d43-af70-4b12-94e5-f60718293041"
address = "2001:db8::2"

[[public_ips]]
id = "9f726e54-b081-4c23-a5f6-071829304152"
address = "192.0.2.3"

[[public_ips]]
id = "a0837f65-c192-4d34-b607-18293041526a"
address = "192.0.2.4"

[[public_ips]]
id = "b1948076-d2a3-4e45-8718-293041526374"
address = "192.0.2.5"
"#,
        state = dir.join("state").display(),
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn start(config: &Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_s2s-apiserver"))
        .arg("--config")
        .arg(config)
        .arg("--simulate-agent")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn s2s-apiserver");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "s2s-apiserver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("s2s-apiserver did not listen on {port}");
}

fn run_phase(py: &Path, phase: &str, port: u16, state: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_test.py");
    let out = Command::new(py)
        .arg(script)
        .arg(phase)
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(TOKEN)
        .arg(state)
        .output()
        .expect("run sdk_test.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(out.status.success(), "{phase} failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("SUMMARY {phase}:")),
        "no summary line"
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
#[ignore = "privileged: run by cargo xtask test"]
fn sdk_drives_every_endpoint_and_state_survives_kill_9() {
    let py = venv();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port);
    let state = dir.path().join("sdk-state.json");

    let mut server = start(&config, port);
    run_phase(&py, "phase1", port, &state);
    // phase1 ended on an acknowledged write: SIGKILL now (Child::kill is
    // SIGKILL on Unix), no graceful shutdown.
    server.0.kill().expect("SIGKILL");
    let status = server.0.wait().expect("wait");
    assert!(!status.success());
    drop(server);

    let key = dir.path().join("state/master.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let _server = start(&config, port);
    run_phase(&py, "phase2", port, &state);
    // Two keys on two projects, through the SDK.
    run_phase(&py, "tenants", port, &state);
}
