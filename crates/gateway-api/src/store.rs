//! Persistence of the resources and the sealed secrets: an embedded SQLite
//! database (`<state_dir>/gateway.db`) plus the change notification the
//! agent subscribes to.
//!
//! Durability: WAL journal with `synchronous=FULL`, so the WAL is fsynced at
//! every commit and a write the API acknowledged survives `kill -9` and a
//! power cut (NORMAL would only survive the former); a database that cannot
//! be put in WAL mode refuses the start. Permissions are enforced at every
//! start, not only at creation: the state directory 0700, the database and
//! its `-wal`/`-shm` files 0600 (created so, before SQLite opens them;
//! repaired with a warning when found looser). Schema: versioned
//! migrations recorded in `schema_migrations`, applied in one transaction at
//! open. Rows hold the SDK's JSON of each resource (the wire type is the
//! model), with the columns the relations need; lists are filtered in Rust
//! since one host holds at most a few hundred resources.
//!
//! Concurrency: one `rusqlite::Connection` behind a `std::sync::Mutex`; every
//! operation is a closure run in one transaction under that lock, so API
//! writes are serialised (validation reads and the write are atomic, e.g.
//! interconnection subnets never overlap). Async callers use the `*_async`
//! helpers, which run the closure on tokio's blocking pool.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use gateway_config::{Config, PrivateNetwork};
use rusqlite::{params, OptionalExtension};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;

use crate::model::{
    BgpSessionStatus, Connection, ConnectionStatus, CustomerGateway, Family, Interco,
    RoutingPolicy, TunnelMtu, TunnelStatus, VpnGateway, VpnGatewayStatus,
};
use crate::secrets::{MasterKey, Psk, Sealed, SecretError};

pub const DB_FILE: &str = "gateway.db";

/// A VPN gateway with its public addresses and private network resolved
/// through `config`.
fn vpn_gateway_spec(config: &Config, gateway: VpnGateway) -> VpnGatewaySpec {
    let (public_ipv4, public_ipv6) = crate::ops::vpn_gateway_addresses(config, &gateway);
    VpnGatewaySpec {
        public_ipv4,
        public_ipv6,
        private_network: config.private_network(&gateway.private_network_id).cloned(),
        gateway,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored row {table}/{id} is not valid JSON: {source}")]
    Corrupt {
        table: &'static str,
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("serialising a row: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("secrets: {0}")]
    Secret(#[from] SecretError),
    #[error("state directory {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database journal mode is {found}, not wal: refusing to run without its durability")]
    JournalMode { found: String },
    #[error("database schema version {found} is newer than this binary knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("the store's lock was poisoned by a panic")]
    Poisoned,
    #[error("blocking task failed: {0}")]
    Join(String),
    #[error("{0} not found")]
    NotFound(String),
}

/// Migrations, in order; index + 1 is the schema version. Never edit an
/// applied one: append.
const MIGRATIONS: &[&str] = &[
    // 1: the four resources and the sealed secrets.
    "CREATE TABLE vpn_gateways (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL
     );
     CREATE TABLE customer_gateways (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL
     );
     CREATE TABLE routing_policies (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL
     );
     CREATE TABLE connections (
        id TEXT PRIMARY KEY,
        vpn_gateway_id TEXT NOT NULL REFERENCES vpn_gateways(id),
        customer_gateway_id TEXT NOT NULL REFERENCES customer_gateways(id),
        body TEXT NOT NULL,
        interco TEXT NOT NULL
     );
     CREATE INDEX connections_vpn_gateway ON connections(vpn_gateway_id);
     CREATE INDEX connections_customer_gateway ON connections(customer_gateway_id);
     CREATE TABLE secrets (
        secret_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        nonce BLOB NOT NULL,
        ciphertext BLOB NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (secret_id, revision)
     );",
    // 2: Secret Manager metadata of secrets (name, project, ...), so callers
    // can create their own secrets for change-psk. Secrets created before
    // get no row: they stay accessible by id.
    "CREATE TABLE secret_meta (
        id TEXT PRIMARY KEY,
        body TEXT NOT NULL
     );",
    // 3: what happened to each connection (IKE and CHILD SAs, BGP), the
    // last EVENTS_KEPT per connection, for operators.
    "CREATE TABLE connection_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        connection_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL
     );
     CREATE INDEX connection_events_by_connection ON connection_events (connection_id, seq);",
];

/// Events kept per connection; older ones go as new ones come.
pub const EVENTS_KEPT: i64 = 200;

/// One thing that happened to a connection (`GET .../connections/{id}/events`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ConnectionEvent {
    /// Increases with every event of the host: `?after=seq` pages and follows.
    pub seq: i64,
    pub created_at: String,
    /// ike_sa_up, ike_sa_down, ike_sa_failed, child_sa_installed,
    /// child_sa_rekeyed, child_sa_deleted, bgp_up, bgp_down, ...
    pub kind: String,
    pub message: String,
}

/// Puts `path` (if it exists) to exactly `mode`, logging when it had to.
fn enforce_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Err(std::io::Error::other(format!(
            "{} is a symbolic link: refusing to follow it",
            path.display()
        )));
    }
    let found = meta.permissions().mode() & 0o7777;
    if found != mode {
        tracing::warn!(
            path = %path.display(),
            found = format_args!("{found:o}"),
            wanted = format_args!("{mode:o}"),
            "state file permissions were wrong: fixed"
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// WAL is what makes `synchronous=FULL` both durable and concurrent with
/// readers; SQLite silently keeps another journal mode when it cannot
/// switch (e.g. a filesystem without shared memory), so the answer is checked.
fn enable_wal(db: &rusqlite::Connection) -> Result<(), StoreError> {
    let mode: String = db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::JournalMode { found: mode });
    }
    Ok(())
}

/// A connection row: the wire resource plus its interconnection subnets,
/// kept even while no routing policy of that family is attached so
/// re-attaching one gives the same addresses back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRow {
    pub conn: Connection,
    pub interco: IntercoSet,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IntercoSet {
    pub v4: Option<Interco>,
    pub v6: Option<Interco>,
}

impl IntercoSet {
    pub fn get(&self, f: Family) -> Option<Interco> {
        match f {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
    pub fn set(&mut self, f: Family, i: Option<Interco>) {
        match f {
            Family::V4 => self.v4 = i,
            Family::V6 => self.v6 = i,
        }
    }
}

struct Inner {
    db: Mutex<rusqlite::Connection>,
    key: MasterKey,
    changes: watch::Sender<u64>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) `<state_dir>/gateway.db` and
    /// `<state_dir>/master.key`, and applies pending migrations.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        // 0700: the directory holds the master key and the database.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::StateDir {
                path: state_dir.to_owned(),
                source,
            })?;
        let dir_err = |source| StoreError::StateDir {
            path: state_dir.to_owned(),
            source,
        };
        enforce_mode(state_dir, 0o700).map_err(dir_err)?;
        let db_path = state_dir.join(DB_FILE);
        // Created 0600 before SQLite opens it: SQLite gives the -wal and
        // -shm files the database's own mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&db_path)
            .map_err(dir_err)?;
        for name in [DB_FILE, "gateway.db-wal", "gateway.db-shm"] {
            enforce_mode(&state_dir.join(name), 0o600).map_err(dir_err)?;
        }
        let key = MasterKey::load_or_create(state_dir)?;
        let mut db = rusqlite::Connection::open(&db_path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        enable_wal(&db)?;
        db.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        migrate(&mut db)?;
        let (changes, _) = watch::channel(0);
        Ok(Store {
            inner: Arc::new(Inner {
                db: Mutex::new(db),
                key,
                changes,
            }),
        })
    }

    /// Seals a secret blob with the store's master key (see
    /// [`MasterKey::seal_blob`]).
    pub fn seal_blob(&self, purpose: &str, plain: &[u8]) -> Result<Sealed, StoreError> {
        Ok(self.inner.key.seal_blob(purpose, plain)?)
    }

    /// Opens a blob sealed by [`Store::seal_blob`] for `purpose`.
    pub fn open_blob(
        &self,
        purpose: &str,
        sealed: &Sealed,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
        Ok(self.inner.key.open_blob(purpose, sealed)?)
    }

    /// The schema version applied.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|tx| {
            Ok(tx
                .tx
                .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                    r.get::<_, Option<i64>>(0)
                })?
                .unwrap_or(0))
        })
    }

    /// Subscribes to configuration changes: the value is a generation
    /// counter bumped after every committed API write (not after the
    /// agent's own status writes, so the agent does not wake itself).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Wakes the subscribers as a write would, without one (the desired
    /// state depends on the configuration too: after a reload).
    pub fn poke(&self) {
        self.inner.changes.send_modify(|g| *g += 1);
    }

    fn run<T, E>(&self, notify: bool, f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let (out, changed) = {
            let mut db = self.inner.db.lock().map_err(|_| StoreError::Poisoned)?;
            let tx = db
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(StoreError::from)?;
            let mut t = Tx {
                tx,
                key: &self.inner.key,
                changed: false,
            };
            let out = f(&mut t)?;
            let changed = t.changed;
            t.tx.commit().map_err(StoreError::from)?;
            (out, changed)
        };
        if notify && changed {
            self.inner.changes.send_modify(|g| *g += 1);
        }
        Ok(out)
    }

    /// Runs `f` in a write transaction; commits if it returns `Ok`, and then
    /// notifies subscribers if it wrote anything.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(true, f)
    }

    /// Runs `f` in a transaction meant for reads.
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.run(false, f)
    }

    /// [`Store::write`] on tokio's blocking pool.
    pub async fn write_async<T, E>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let s = self.clone();
        tokio::task::spawn_blocking(move || s.write(f))
            .await
            .map_err(|e| E::from(StoreError::Join(e.to_string())))?
    }

    /// [`Store::read`] on tokio's blocking pool.
    pub async fn read_async<T, E>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let s = self.clone();
        tokio::task::spawn_blocking(move || s.read(f))
            .await
            .map_err(|e| E::from(StoreError::Join(e.to_string())))?
    }

    /// Runs a blocking store call (any method below) on tokio's blocking
    /// pool: `store.blocking(move |s| s.desired_state(&config)).await`.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))
    }

    // ---------------------------------------------------------------
    // Agent-facing API (blocking; see `blocking` for async callers)
    // ---------------------------------------------------------------

    /// Everything the agent needs to run tunnels: every VPN gateway with
    /// its public addresses and private network resolved through `config`,
    /// and every connection with its gateways, tunnels (one per shared
    /// family, the primary first), attached routing policies and BGP
    /// interconnection subnets. PSKs are not included: fetch them with
    /// [`Store::connection_psk`]. Blocking (a short SQLite read): from async
    /// code, call it in `spawn_blocking`.
    pub fn desired_state(&self, config: &Config) -> Result<DesiredState, StoreError> {
        self.read(|tx| {
            let gateways = tx.vpn_gateways()?;
            let customers = tx.customer_gateways()?;
            let policies = tx.routing_policies()?;
            // By id: every connection looks its three kinds up (a scan of
            // each list per connection made a pass quadratic).
            let gateway_by_id: HashMap<&str, &VpnGateway> =
                gateways.iter().map(|g| (g.id.as_str(), g)).collect();
            let customer_by_id: HashMap<&str, &CustomerGateway> =
                customers.iter().map(|g| (g.id.as_str(), g)).collect();
            let policy_by_id: HashMap<&str, &RoutingPolicy> =
                policies.iter().map(|p| (p.id.as_str(), p)).collect();
            let mut connections = Vec::new();
            for row in tx.connections()? {
                let find_pol =
                    |id: Option<&str>| id.and_then(|id| policy_by_id.get(id).map(|p| (*p).clone()));
                let Some(vpn_gateway) = gateway_by_id
                    .get(row.conn.vpn_gateway_id.as_str())
                    .map(|g| (*g).clone())
                else {
                    continue;
                };
                let Some(customer_gateway) = customer_by_id
                    .get(row.conn.customer_gateway_id.as_str())
                    .map(|g| (*g).clone())
                else {
                    continue;
                };
                let (l4, l6) = crate::ops::vpn_gateway_addresses(config, &vpn_gateway);
                let r4 = customer_gateway
                    .public_ipv4
                    .as_deref()
                    .and_then(|s| s.parse().ok());
                let r6 = customer_gateway
                    .public_ipv6
                    .as_deref()
                    .and_then(|s| s.parse().ok());
                let primary = Family::from_is_ipv6(row.conn.is_ipv6);
                let mut tunnels: Vec<TunnelSpec> = [(Family::V4, l4, r4), (Family::V6, l6, r6)]
                    .into_iter()
                    .filter_map(|(family, l, r)| {
                        Some(TunnelSpec {
                            family,
                            local: l?,
                            remote: r?,
                            primary: family == primary,
                        })
                    })
                    .collect();
                tunnels.sort_by_key(|t| !t.primary);
                connections.push(ConnectionSpec {
                    routing_policy_ipv4: find_pol(
                        row.conn
                            .bgp_session_ipv4
                            .as_ref()
                            .map(|s| s.routing_policy_id.as_str()),
                    ),
                    routing_policy_ipv6: find_pol(
                        row.conn
                            .bgp_session_ipv6
                            .as_ref()
                            .map(|s| s.routing_policy_id.as_str()),
                    ),
                    interco_ipv4: row.conn.bgp_session_ipv4.as_ref().and(row.interco.v4),
                    interco_ipv6: row.conn.bgp_session_ipv6.as_ref().and(row.interco.v6),
                    private_network: config
                        .private_network(&vpn_gateway.private_network_id)
                        .cloned(),
                    tunnels,
                    connection: row.conn,
                    vpn_gateway,
                    customer_gateway,
                });
            }
            drop((gateway_by_id, customer_by_id, policy_by_id));
            let vpn_gateways = gateways
                .into_iter()
                .map(|g| vpn_gateway_spec(config, g))
                .collect();
            Ok(DesiredState {
                vpn_gateways,
                connections,
            })
        })
    }

    /// The VPN gateways part of [`Store::desired_state`] alone, without
    /// reading a connection (the gateways' statuses need no more).
    pub fn vpn_gateway_specs(&self, config: &Config) -> Result<Vec<VpnGatewaySpec>, StoreError> {
        self.read(|tx| {
            Ok(tx
                .vpn_gateways()?
                .into_iter()
                .map(|g| vpn_gateway_spec(config, g))
                .collect())
        })
    }

    /// The PSK the connection currently points at (decrypted on demand).
    pub fn connection_psk(&self, connection_id: &str) -> Result<Psk, StoreError> {
        let id = connection_id.to_owned();
        self.read(move |tx| {
            let row = tx
                .connection(&id)?
                .ok_or_else(|| StoreError::NotFound(format!("connection {id}")))?;
            tx.secret(&row.conn.secret_id, row.conn.secret_revision)?
                .ok_or_else(|| {
                    StoreError::NotFound(format!(
                        "secret {} revision {}",
                        row.conn.secret_id, row.conn.secret_revision
                    ))
                })
        })
    }

    /// Records events of connections (agent-facing, blocking): `(connection
    /// id, kind, message)` in order, in one transaction; each connection
    /// keeps its last [`EVENTS_KEPT`]. Events of a connection that no
    /// longer exists are dropped. Does not wake the agent.
    pub fn add_connection_events(
        &self,
        events: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        self.read(|tx| {
            for (id, kind, message) in events {
                if tx.connection(id)?.is_none() {
                    continue;
                }
                tx.add_connection_event(id, kind, message)?;
            }
            Ok(())
        })
    }

    /// Sets a VPN gateway's status (provisioning → active, failed, ...).
    pub fn set_vpn_gateway_status(
        &self,
        id: &str,
        status: VpnGatewayStatus,
    ) -> Result<(), StoreError> {
        self.read(|tx| {
            let mut g = tx
                .vpn_gateway(id)?
                .ok_or_else(|| StoreError::NotFound(format!("vpn gateway {id}")))?;
            g.status = status;
            g.updated_at = crate::now_rfc3339();
            tx.put_vpn_gateway(&g)
        })
    }

    /// Removes a VPN gateway the API marked `deprovisioning`, once the
    /// agent has torn it down. Returns whether it was removed.
    pub fn finish_vpn_gateway_deletion(&self, id: &str) -> Result<bool, StoreError> {
        self.read(|tx| {
            let Some(g) = tx.vpn_gateway(id)? else {
                return Ok(false);
            };
            if g.status != VpnGatewayStatus::Deprovisioning {
                return Ok(false);
            }
            tx.delete_row("vpn_gateways", id)?;
            Ok(true)
        })
    }

    /// Records the running state of a connection. `tunnel_status` is
    /// derived: it reports the primary tunnel, the family named by the
    /// connection's `is_ipv6`. A family without a tunnel keeps `null`
    /// statuses and packet sizes.
    pub fn set_connection_status(
        &self,
        id: &str,
        update: &ConnectionStatusUpdate,
    ) -> Result<(), StoreError> {
        self.read(|tx| {
            if tx.apply_connection_status(id, update)? {
                Ok(())
            } else {
                Err(StoreError::NotFound(format!("connection {id}")))
            }
        })
    }

    /// [`Store::set_connection_status`] for many connections in one
    /// transaction (the agent's batches); a connection deleted meanwhile is
    /// skipped. Returns how many were written.
    pub fn set_connection_statuses(
        &self,
        updates: &[(String, ConnectionStatusUpdate)],
    ) -> Result<usize, StoreError> {
        self.read(|tx| {
            let mut written = 0;
            for (id, update) in updates {
                written += usize::from(tx.apply_connection_status(id, update)?);
            }
            Ok(written)
        })
    }
}

impl Tx<'_> {
    /// Writes `update` into connection `id`; false if there is none.
    fn apply_connection_status(
        &mut self,
        id: &str,
        update: &ConnectionStatusUpdate,
    ) -> Result<bool, StoreError> {
        let Some(mut row) = self.connection(id)? else {
            return Ok(false);
        };
        let c = &mut row.conn;
        c.status = update.status;
        if c.tunnel_status_ipv4.is_some() {
            c.tunnel_status_ipv4 = Some(update.tunnel_status_ipv4);
        }
        if c.tunnel_status_ipv6.is_some() {
            c.tunnel_status_ipv6 = Some(update.tunnel_status_ipv6);
        }
        c.tunnel_mtu_ipv4 = update
            .tunnel_mtu_ipv4
            .filter(|_| c.tunnel_status_ipv4.is_some());
        c.tunnel_mtu_ipv6 = update
            .tunnel_mtu_ipv6
            .filter(|_| c.tunnel_status_ipv6.is_some());
        c.tunnel_status = if c.is_ipv6 {
            update.tunnel_status_ipv6
        } else {
            update.tunnel_status_ipv4
        };
        if c.bgp_session_ipv4.is_some() {
            c.bgp_status_ipv4 = update.bgp_status_ipv4;
        }
        if c.bgp_session_ipv6.is_some() {
            c.bgp_status_ipv6 = update.bgp_status_ipv6;
        }
        self.put_connection(&row)?;
        Ok(true)
    }
}

/// What a connection list selects: every field set must match (`tags`:
/// all of them; the id sets and `statuses`: any of theirs), in `order`,
/// `limit` rows from `offset`.
#[derive(Debug, Clone, Default)]
pub struct ConnectionQuery<'a> {
    /// Only these projects (the caller's scope); `None`: every one.
    pub projects: Option<&'a [String]>,
    pub project_id: Option<&'a str>,
    pub organization_id: Option<&'a str>,
    /// A substring of the name.
    pub name_contains: Option<&'a str>,
    pub tags: Vec<&'a str>,
    pub statuses: Vec<ConnectionStatus>,
    pub is_ipv6: Option<bool>,
    pub route_propagation_enabled: Option<bool>,
    /// The routing policy of either BGP session.
    pub routing_policy_ids: Vec<&'a str>,
    pub vpn_gateway_ids: Vec<&'a str>,
    pub customer_gateway_ids: Vec<&'a str>,
    pub order: ConnectionOrder,
    pub descending: bool,
    pub offset: u64,
    pub limit: u64,
}

/// The resources that belong to a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    VpnGateway,
    CustomerGateway,
    RoutingPolicy,
    Connection,
    Secret,
}

impl Owned {
    fn table(self) -> &'static str {
        match self {
            Owned::VpnGateway => "vpn_gateways",
            Owned::CustomerGateway => "customer_gateways",
            Owned::RoutingPolicy => "routing_policies",
            Owned::Connection => "connections",
            Owned::Secret => "secret_meta",
        }
    }

    /// Its name in `not_found` errors.
    pub fn resource(self) -> &'static str {
        match self {
            Owned::VpnGateway => "vpn_gateway",
            Owned::CustomerGateway => "customer_gateway",
            Owned::RoutingPolicy => "routing_policy",
            Owned::Connection => "connection",
            Owned::Secret => "secret",
        }
    }
}

/// The two gateways a connection hangs from, each indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    Vpn,
    Customer,
}

impl GatewayKind {
    fn column(self) -> &'static str {
        match self {
            GatewayKind::Vpn => "vpn_gateway_id",
            GatewayKind::Customer => "customer_gateway_id",
        }
    }
}

/// The orders of a connection list (ties in creation order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConnectionOrder {
    #[default]
    Created,
    Name,
    Status,
}

/// The running state the agent reports for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStatusUpdate {
    pub status: ConnectionStatus,
    pub tunnel_status_ipv4: TunnelStatus,
    pub tunnel_status_ipv6: TunnelStatus,
    pub bgp_status_ipv4: BgpSessionStatus,
    pub bgp_status_ipv6: BgpSessionStatus,
    /// Packet sizes of the IPv4 / IPv6 tunnel while it has a CHILD SA.
    pub tunnel_mtu_ipv4: Option<TunnelMtu>,
    pub tunnel_mtu_ipv6: Option<TunnelMtu>,
}

/// What the agent must run.
#[derive(Debug, Clone)]
pub struct DesiredState {
    pub vpn_gateways: Vec<VpnGatewaySpec>,
    pub connections: Vec<ConnectionSpec>,
}

/// A VPN gateway with its host mapping resolved (`None` when the config no
/// longer maps an id: the agent should report the gateway `failed`).
#[derive(Debug, Clone)]
pub struct VpnGatewaySpec {
    pub gateway: VpnGateway,
    pub public_ipv4: Option<IpAddr>,
    pub public_ipv6: Option<IpAddr>,
    pub private_network: Option<PrivateNetwork>,
}

/// One IPsec tunnel of a connection: IKE/ESP between `local` (our public
/// address) and `remote` (the customer gateway's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelSpec {
    pub family: Family,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// The tunnel `tunnel_status` reports (the connection's `is_ipv6`).
    pub primary: bool,
}

/// One connection with everything needed to run its tunnels: a tunnel per
/// family both gateways have an address of, primary first; BGP sessions
/// for the families with an attached routing policy, on the `interco_*`
/// subnets (ours is `local`, the customer's `peer`), our ASN in
/// `vpn_gateway.asn`, theirs in `customer_gateway.asn`.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    pub tunnels: Vec<TunnelSpec>,
    /// The VPN gateway's LAN side (interface, subnets to announce).
    pub private_network: Option<PrivateNetwork>,
    pub connection: Connection,
    pub vpn_gateway: VpnGateway,
    pub customer_gateway: CustomerGateway,
    pub routing_policy_ipv4: Option<RoutingPolicy>,
    pub routing_policy_ipv6: Option<RoutingPolicy>,
    pub interco_ipv4: Option<Interco>,
    pub interco_ipv6: Option<Interco>,
}

fn migrate(db: &mut rusqlite::Connection) -> Result<(), StoreError> {
    let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            applied_at TEXT NOT NULL
         );",
    )?;
    let current: i64 = tx
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?
        .unwrap_or(0);
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, crate::now_rfc3339()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// One transaction on the store.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    key: &'a MasterKey,
    changed: bool,
}

impl Tx<'_> {
    fn all<T: DeserializeOwned>(&self, table: &'static str) -> Result<Vec<T>, StoreError> {
        // rowid order is creation order: rowids grow monotonically.
        let mut stmt = self
            .tx
            .prepare(&format!("SELECT id, body FROM {table} ORDER BY rowid"))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row?;
            out.push(
                serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
                    table,
                    id,
                    source,
                })?,
            );
        }
        Ok(out)
    }

    fn one<T: DeserializeOwned>(
        &self,
        table: &'static str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let body: Option<String> = self
            .tx
            .query_row(
                &format!("SELECT body FROM {table} WHERE id = ?1"),
                [id],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| {
            serde_json::from_str(&b).map_err(|source| StoreError::Corrupt {
                table,
                id: id.to_owned(),
                source,
            })
        })
        .transpose()
    }

    fn put<T: Serialize>(
        &mut self,
        table: &'static str,
        id: &str,
        v: &T,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(v).map_err(StoreError::Serialize)?;
        self.tx.execute(
            &format!(
                "INSERT INTO {table} (id, body) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET body = excluded.body"
            ),
            params![id, body],
        )?;
        self.changed = true;
        Ok(())
    }

    fn delete_row(&mut self, table: &'static str, id: &str) -> Result<bool, StoreError> {
        let n = self
            .tx
            .execute(&format!("DELETE FROM {table} WHERE id = ?1"), [id])?;
        self.changed |= n > 0;
        Ok(n > 0)
    }

    pub fn vpn_gateways(&self) -> Result<Vec<VpnGateway>, StoreError> {
        self.all("vpn_gateways")
    }
    pub fn vpn_gateway(&self, id: &str) -> Result<Option<VpnGateway>, StoreError> {
        self.one("vpn_gateways", id)
    }
    pub fn put_vpn_gateway(&mut self, g: &VpnGateway) -> Result<(), StoreError> {
        self.put("vpn_gateways", &g.id, g)
    }
    pub fn delete_vpn_gateway(&mut self, id: &str) -> Result<bool, StoreError> {
        self.delete_row("vpn_gateways", id)
    }

    pub fn customer_gateways(&self) -> Result<Vec<CustomerGateway>, StoreError> {
        self.all("customer_gateways")
    }
    pub fn customer_gateway(&self, id: &str) -> Result<Option<CustomerGateway>, StoreError> {
        self.one("customer_gateways", id)
    }
    pub fn put_customer_gateway(&mut self, g: &CustomerGateway) -> Result<(), StoreError> {
        self.put("customer_gateways", &g.id, g)
    }
    pub fn delete_customer_gateway(&mut self, id: &str) -> Result<bool, StoreError> {
        self.delete_row("customer_gateways", id)
    }

    pub fn routing_policies(&self) -> Result<Vec<RoutingPolicy>, StoreError> {
        self.all("routing_policies")
    }
    pub fn routing_policy(&self, id: &str) -> Result<Option<RoutingPolicy>, StoreError> {
        self.one("routing_policies", id)
    }
    pub fn put_routing_policy(&mut self, p: &RoutingPolicy) -> Result<(), StoreError> {
        self.put("routing_policies", &p.id, p)
    }
    pub fn delete_routing_policy(&mut self, id: &str) -> Result<bool, StoreError> {
        self.delete_row("routing_policies", id)
    }

    fn connection_from(
        id: String,
        body: String,
        interco: String,
    ) -> Result<ConnectionRow, StoreError> {
        let conn = serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
            table: "connections",
            id: id.clone(),
            source,
        })?;
        let interco = serde_json::from_str(&interco).map_err(|source| StoreError::Corrupt {
            table: "connections",
            id,
            source,
        })?;
        Ok(ConnectionRow { conn, interco })
    }

    /// Decodes every row of `stmt` (`SELECT id, body, interco ...`).
    fn connection_rows(
        stmt: &mut rusqlite::Statement<'_>,
        params: impl rusqlite::Params,
    ) -> Result<Vec<ConnectionRow>, StoreError> {
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body, interco) = row?;
            out.push(Self::connection_from(id, body, interco)?);
        }
        Ok(out)
    }

    pub fn connections(&self) -> Result<Vec<ConnectionRow>, StoreError> {
        let mut stmt = self
            .tx
            .prepare("SELECT id, body, interco FROM connections ORDER BY rowid")?;
        let out = Self::connection_rows(&mut stmt, [])?;
        Ok(out)
    }

    /// One page of the connections `q` selects, in its order, and how many
    /// it selects in all. The filters and the order are evaluated by
    /// SQLite on the stored bodies (the VPN and customer gateway ids on
    /// their indexes); only the page's rows are decoded, so a page costs
    /// about the same wherever it is in the list.
    pub fn connection_page(
        &self,
        q: &ConnectionQuery<'_>,
    ) -> Result<(Vec<ConnectionRow>, usize), StoreError> {
        use rusqlite::types::Value as Sql;
        let text = |s: &str| Sql::Text(s.to_owned());
        let placeholders = |n: usize| vec!["?"; n].join(", ");
        let mut clauses: Vec<String> = Vec::new();
        let mut args: Vec<Sql> = Vec::new();
        if let Some(ps) = q.projects {
            clauses.push(format!(
                "json_extract(body, '$.project_id') IN ({})",
                placeholders(ps.len())
            ));
            args.extend(ps.iter().map(|p| text(p)));
        }
        for (path, value) in [
            ("$.project_id", q.project_id),
            ("$.organization_id", q.organization_id),
        ] {
            if let Some(v) = value {
                clauses.push(format!("json_extract(body, '{path}') = ?"));
                args.push(text(v));
            }
        }
        if let Some(n) = q.name_contains {
            // Bytes, as `str::contains` compares (a NUL included).
            clauses.push("instr(CAST(json_extract(body, '$.name') AS BLOB), ?) > 0".into());
            args.push(Sql::Blob(n.as_bytes().to_vec()));
        }
        for tag in &q.tags {
            clauses.push("EXISTS (SELECT 1 FROM json_each(body, '$.tags') WHERE value = ?)".into());
            args.push(text(tag));
        }
        if !q.statuses.is_empty() {
            clauses.push(format!(
                "json_extract(body, '$.status') IN ({})",
                placeholders(q.statuses.len())
            ));
            args.extend(q.statuses.iter().map(|s| text(s.as_str())));
        }
        for (path, value) in [
            ("$.is_ipv6", q.is_ipv6),
            ("$.route_propagation_enabled", q.route_propagation_enabled),
        ] {
            if let Some(v) = value {
                clauses.push(format!("json_extract(body, '{path}') = ?"));
                args.push(Sql::Integer(i64::from(v)));
            }
        }
        if !q.routing_policy_ids.is_empty() {
            let set = placeholders(q.routing_policy_ids.len());
            clauses.push(format!(
                "(json_extract(body, '$.bgp_session_ipv4.routing_policy_id') IN ({set}) \
                  OR json_extract(body, '$.bgp_session_ipv6.routing_policy_id') IN ({set}))"
            ));
            for _ in 0..2 {
                args.extend(q.routing_policy_ids.iter().map(|p| text(p)));
            }
        }
        for (column, ids) in [
            ("vpn_gateway_id", &q.vpn_gateway_ids),
            ("customer_gateway_id", &q.customer_gateway_ids),
        ] {
            if !ids.is_empty() {
                clauses.push(format!("{column} IN ({})", placeholders(ids.len())));
                args.extend(ids.iter().map(|i| text(i)));
            }
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let total: i64 = self.tx.query_row(
            &format!("SELECT COUNT(*) FROM connections{filter}"),
            rusqlite::params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        // Ties stay in creation order, reversed with the order (a stable
        // sort then a reversal).
        let dir = if q.descending { "DESC" } else { "ASC" };
        let order = match q.order {
            ConnectionOrder::Created => format!("rowid {dir}"),
            ConnectionOrder::Name => format!("json_extract(body, '$.name') {dir}, rowid {dir}"),
            ConnectionOrder::Status => {
                format!("json_extract(body, '$.status') {dir}, rowid {dir}")
            }
        };
        let clamp = |v: u64| Sql::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        args.push(clamp(q.limit));
        args.push(clamp(q.offset));
        let mut stmt = self.tx.prepare(&format!(
            "SELECT id, body, interco FROM connections{filter} ORDER BY {order} LIMIT ? OFFSET ?"
        ))?;
        let out = Self::connection_rows(&mut stmt, rusqlite::params_from_iter(args.iter()))?;
        Ok((out, usize::try_from(total).unwrap_or(0)))
    }

    /// The connections on one gateway, in creation order, found on the
    /// gateway's index (only theirs are decoded).
    pub fn connections_on(
        &self,
        kind: GatewayKind,
        gateway_id: &str,
    ) -> Result<Vec<ConnectionRow>, StoreError> {
        let mut stmt = self.tx.prepare(&format!(
            "SELECT id, body, interco FROM connections WHERE {} = ?1 ORDER BY rowid",
            kind.column()
        ))?;
        let out = Self::connection_rows(&mut stmt, [gateway_id])?;
        Ok(out)
    }

    /// The ids of one gateway's connections (its `connection_ids`), in
    /// creation order, read on the index without a connection's body.
    pub fn connection_ids_on(
        &self,
        kind: GatewayKind,
        gateway_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.tx.prepare(&format!(
            "SELECT id FROM connections WHERE {} = ?1 ORDER BY rowid",
            kind.column()
        ))?;
        let rows = stmt.query_map([gateway_id], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every gateway's connection ids (for a list of gateways), in creation
    /// order, without a connection's body.
    pub fn connection_ids_by(
        &self,
        kind: GatewayKind,
    ) -> Result<HashMap<String, Vec<String>>, StoreError> {
        let mut stmt = self.tx.prepare(&format!(
            "SELECT id, {} FROM connections ORDER BY rowid",
            kind.column()
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            let (id, gateway) = row?;
            out.entry(gateway).or_default().push(id);
        }
        Ok(out)
    }

    /// How many connections a VPN gateway has (the quota check), counted
    /// on the index without reading a connection.
    pub fn connection_count_on(&self, vpn_gateway_id: &str) -> Result<usize, StoreError> {
        let n: i64 = self.tx.query_row(
            "SELECT COUNT(*) FROM connections WHERE vpn_gateway_id = ?1",
            [vpn_gateway_id],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// How many connections the host has (its `connections_per_host`
    /// quota).
    pub fn connection_count(&self) -> Result<usize, StoreError> {
        let n: i64 = self
            .tx
            .query_row("SELECT COUNT(*) FROM connections", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// The interconnection subnets of every connection but `except` (for
    /// allocating one), read without the connections' bodies.
    pub fn intercos(&self, except: Option<&str>) -> Result<Vec<Interco>, StoreError> {
        let mut stmt = self.tx.prepare("SELECT id, interco FROM connections")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, interco) = row?;
            if Some(id.as_str()) == except {
                continue;
            }
            let set: IntercoSet =
                serde_json::from_str(&interco).map_err(|source| StoreError::Corrupt {
                    table: "connections",
                    id,
                    source,
                })?;
            out.extend([set.v4, set.v6].into_iter().flatten());
        }
        Ok(out)
    }

    pub fn connection(&self, id: &str) -> Result<Option<ConnectionRow>, StoreError> {
        let row: Option<(String, String)> = self
            .tx
            .query_row(
                "SELECT body, interco FROM connections WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(b, i)| Self::connection_from(id.to_owned(), b, i))
            .transpose()
    }

    pub fn put_connection(&mut self, row: &ConnectionRow) -> Result<(), StoreError> {
        let body = serde_json::to_string(&row.conn).map_err(StoreError::Serialize)?;
        let interco = serde_json::to_string(&row.interco).map_err(StoreError::Serialize)?;
        self.tx.execute(
            "INSERT INTO connections (id, vpn_gateway_id, customer_gateway_id, body, interco)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET body = excluded.body, interco = excluded.interco",
            params![
                row.conn.id,
                row.conn.vpn_gateway_id,
                row.conn.customer_gateway_id,
                body,
                interco
            ],
        )?;
        self.changed = true;
        Ok(())
    }

    pub fn delete_connection(&mut self, id: &str) -> Result<bool, StoreError> {
        self.tx.execute(
            "DELETE FROM connection_events WHERE connection_id = ?1",
            [id],
        )?;
        self.delete_row("connections", id)
    }

    /// A connection's events after `after` (a `seq`), oldest first, at
    /// most `limit`.
    pub fn connection_events(
        &self,
        id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<ConnectionEvent>, StoreError> {
        let mut stmt = self.tx.prepare(
            "SELECT seq, created_at, kind, message FROM connection_events
             WHERE connection_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![id, after, limit], |r| {
            Ok(ConnectionEvent {
                seq: r.get(0)?,
                created_at: r.get(1)?,
                kind: r.get(2)?,
                message: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Seals `psk` as a new revision of `secret_id` (1 for a new secret);
    /// returns the revision.
    /// Records one event of connection `id` (which must exist), keeping
    /// its last [`EVENTS_KEPT`].
    pub fn add_connection_event(
        &mut self,
        id: &str,
        kind: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO connection_events (connection_id, created_at, kind, message)
             VALUES (?1, ?2, ?3, ?4)",
            params![id, crate::now_rfc3339(), kind, message],
        )?;
        self.tx.execute(
            "DELETE FROM connection_events WHERE connection_id = ?1 AND seq <=
               (SELECT seq FROM connection_events WHERE connection_id = ?1
                ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            params![id, EVENTS_KEPT],
        )?;
        Ok(())
    }

    pub fn add_secret_revision(&mut self, secret_id: &str, psk: &Psk) -> Result<u32, StoreError> {
        let revision = self.latest_secret_revision(secret_id)?.unwrap_or(0) + 1;
        let sealed = self.key.seal(secret_id, revision, psk)?;
        self.tx.execute(
            "INSERT INTO secrets (secret_id, revision, nonce, ciphertext, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                secret_id,
                revision,
                &sealed.nonce[..],
                sealed.ciphertext,
                crate::now_rfc3339()
            ],
        )?;
        self.changed = true;
        Ok(revision)
    }

    pub fn latest_secret_revision(&self, secret_id: &str) -> Result<Option<u32>, StoreError> {
        Ok(self.tx.query_row(
            "SELECT MAX(revision) FROM secrets WHERE secret_id = ?1",
            [secret_id],
            |r| r.get::<_, Option<u32>>(0),
        )?)
    }

    /// Decrypts one revision of a secret.
    pub fn secret(&self, secret_id: &str, revision: u32) -> Result<Option<Psk>, StoreError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = self
            .tx
            .query_row(
                "SELECT nonce, ciphertext FROM secrets WHERE secret_id = ?1 AND revision = ?2",
                params![secret_id, revision],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((nonce, ciphertext)) = row else {
            return Ok(None);
        };
        let nonce: [u8; 12] = nonce
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Secret(SecretError::Decrypt))?;
        Ok(Some(self.key.open(
            secret_id,
            revision,
            &Sealed { nonce, ciphertext },
        )?))
    }

    pub fn delete_secret(&mut self, secret_id: &str) -> Result<(), StoreError> {
        let n = self
            .tx
            .execute("DELETE FROM secrets WHERE secret_id = ?1", [secret_id])?;
        self.changed |= n > 0;
        self.delete_row("secret_meta", secret_id)?;
        Ok(())
    }

    /// The project of a resource (`None` if there is no such resource, or
    /// a secret has no metadata).
    pub fn project_of(&self, kind: Owned, id: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension as _;
        Ok(self
            .tx
            .query_row(
                &format!(
                    "SELECT json_extract(body, '$.project_id') FROM {} WHERE id = ?1",
                    kind.table()
                ),
                [id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Secret Manager metadata of a secret (JSON of the SDK's `Secret`).
    pub fn secret_meta(&self, secret_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.one("secret_meta", secret_id)
    }

    pub fn put_secret_meta(
        &mut self,
        secret_id: &str,
        meta: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.put("secret_meta", secret_id, meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn policy(id: &str) -> RoutingPolicy {
        RoutingPolicy {
            id: id.into(),
            project_id: "p".into(),
            organization_id: "p".into(),
            name: "n".into(),
            tags: vec![],
            created_at: crate::now_rfc3339(),
            updated_at: crate::now_rfc3339(),
            is_ipv6: false,
            prefix_filter_in: vec!["10.0.0.0/8".into()],
            prefix_filter_out: vec![],
            region: "fr-par".into(),
        }
    }

    #[test]
    fn migrations_wal_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), 3);
        let mode: String = s
            .read(|tx| {
                Ok::<_, StoreError>(tx.tx.query_row("PRAGMA journal_mode", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = s
            .read(|tx| {
                Ok::<_, StoreError>(tx.tx.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let psk = Psk::generate().unwrap();
        let p2 = psk.clone();
        s.write(|tx| {
            tx.put_routing_policy(&policy("a"))?;
            tx.put_routing_policy(&policy("b"))?;
            tx.add_secret_revision("sec", &p2)?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), 3);
        let (ids, got) = s
            .read(|tx| {
                let ids: Vec<String> = tx.routing_policies()?.into_iter().map(|p| p.id).collect();
                Ok::<_, StoreError>((ids, tx.secret("sec", 1)?))
            })
            .unwrap();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(got, Some(psk));
        let migrations: i64 = s
            .read(|tx| {
                Ok::<_, StoreError>(tx.tx.query_row(
                    "SELECT COUNT(*) FROM schema_migrations",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(migrations, 3, "migrations are not re-applied");
    }

    #[test]
    fn secrets_are_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let psk = Psk::generate().unwrap();
        let p2 = psk.clone();
        let rev = s.write(|tx| tx.add_secret_revision("x", &p2)).unwrap();
        assert_eq!(rev, 1);
        let p3 = Psk::generate().unwrap();
        assert_eq!(s.write(|tx| tx.add_secret_revision("x", &p3)).unwrap(), 2);
        drop(s);
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            assert!(!bytes.windows(psk.len()).any(|w| w == psk.expose()));
        }
        let key = dir.path().join(crate::secrets::MASTER_KEY_FILE);
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn newer_schema_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        db.execute("INSERT INTO schema_migrations VALUES (99, 'x')", [])
            .unwrap();
        drop(db);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn writes_notify_status_writes_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let rx = s.subscribe();
        assert_eq!(*rx.borrow(), 0);
        s.write(|tx| tx.put_routing_policy(&policy("a"))).unwrap();
        assert_eq!(*rx.borrow(), 1);
        // A failed write does not commit nor notify.
        let r: Result<(), StoreError> = s.write(|tx| {
            tx.put_routing_policy(&policy("b"))?;
            Err(StoreError::NotFound("x".into()))
        });
        assert!(r.is_err());
        assert_eq!(*rx.borrow(), 1);
        assert!(s.read(|tx| tx.routing_policy("b")).unwrap().is_none());
    }

    #[test]
    fn v1_database_is_migrated_keeping_rows() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        // Roll the database back to schema 1, as an older binary left it.
        let db = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        db.execute_batch(
            "DROP TABLE secret_meta; DROP TABLE connection_events;
             DELETE FROM schema_migrations WHERE version >= 2;",
        )
        .unwrap();
        db.execute(
            "INSERT INTO routing_policies (id, body) VALUES ('old', ?1)",
            [serde_json::to_string(&policy("old")).unwrap()],
        )
        .unwrap();
        drop(db);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), 3);
        let (old, meta) = s
            .write(|tx| {
                tx.put_secret_meta("m", &serde_json::json!({"name": "m"}))?;
                // Migration 3's table is there too.
                assert!(tx.connection_events("any", 0, 10)?.is_empty());
                Ok::<_, StoreError>((tx.routing_policy("old")?, tx.secret_meta("m")?))
            })
            .unwrap();
        assert_eq!(old.unwrap().id, "old");
        assert_eq!(meta.unwrap()["name"], "m");
    }

    #[tokio::test]
    async fn blocking_helper_and_state_dir_mode() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let s = Store::open(&state).unwrap();
        assert_eq!(
            std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let v = s.blocking(|s| s.schema_version()).await.unwrap().unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn permissions_enforced_at_every_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mode = |name: &str| {
            std::fs::metadata(state.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        let s = Store::open(&state).unwrap();
        s.write(|tx| {
            tx.put_routing_policy(&policy("a"))?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
        // From creation on: the database and its WAL are 0600.
        assert_eq!(mode(DB_FILE), 0o600);
        assert_eq!(mode("gateway.db-wal"), 0o600);
        // Loosened by hand (or by a backup restore): fixed at the next start
        // (the first store stays open, so the WAL file is still there).
        let set = |name: &str, m: u32| {
            std::fs::set_permissions(state.join(name), std::fs::Permissions::from_mode(m)).unwrap()
        };
        set("", 0o755);
        set(DB_FILE, 0o644);
        set("gateway.db-wal", 0o666);
        let s2 = Store::open(&state).unwrap();
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode(DB_FILE), 0o600);
        assert_eq!(mode("gateway.db-wal"), 0o600);
        assert_eq!(s2.schema_version().unwrap(), 3);
        drop(s);
    }

    #[test]
    fn journal_mode_other_than_wal_is_an_error() {
        // An in-memory database cannot be put in WAL mode: SQLite answers
        // "memory", which must be refused in release builds too.
        let db = rusqlite::Connection::open_in_memory().unwrap();
        assert!(matches!(
            enable_wal(&db),
            Err(StoreError::JournalMode { found }) if found == "memory"
        ));
        let dir = tempfile::tempdir().unwrap();
        let db = rusqlite::Connection::open(dir.path().join("x.db")).unwrap();
        enable_wal(&db).unwrap();
    }
}
