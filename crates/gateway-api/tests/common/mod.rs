//! The in-process API server the HTTP tests share: a config written for a
//! fresh state directory, the store opened, `serve_with_shutdown` on an
//! ephemeral port of 127.0.0.1 in a runtime thread, stopped on drop.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::path::Path;
use std::sync::mpsc;

use gateway_api::Store;
use gateway_config::Config;

pub struct InProcess {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's store and config, for tests that look behind the API.
    pub store: Store,
    pub config: Config,
    pub dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts a server on the config `text` returns for a state directory.
pub fn serve(text: impl FnOnce(&Path) -> String) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&text(&dir.path().join("state"))).unwrap();
    let store = Store::open(&config.gateway.state_dir).unwrap();
    let (kept_store, kept_config) = (store.clone(), config.clone());
    let (tx, rx) = mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            gateway_api::serve_with_shutdown(config, l, store, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    InProcess {
        url: format!("http://{addr}"),
        store: kept_store,
        config: kept_config,
        dir,
        _stop: stop,
    }
}

/// The one-host config most API tests serve: one gateway type `VGW-S`
/// (100 Mbit/s, `allowed_connections`), private network `pn1` on `lan0`,
/// public IPs `ip4` (192.0.2.1) and `ip6` (2001:db8::1), one token;
/// `api_extra`: more lines for the `[api]` section.
pub fn one_host_config(
    state: &Path,
    token: &str,
    api_extra: &str,
    allowed_connections: u32,
) -> String {
    format!(
        r#"
[gateway]
state_dir = "{}"
[interfaces]
wan = "wan0"
lan = "lan0"
[api]
tokens = ["{token}"]
{api_extra}
[[gateway_types]]
name = "VGW-S"
bandwidth = 100000000
allowed_connections = {allowed_connections}
[[private_networks]]
id = "pn1"
interface = "lan0"
ipv4_subnet = "198.51.100.0/24"
ipv6_subnet = "2001:db8:100::/64"
[[public_ips]]
id = "ip4"
address = "192.0.2.1"
[[public_ips]]
id = "ip6"
address = "2001:db8::1"
"#,
        state.display()
    )
}
