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

mod tx;

#[cfg(test)]
mod tests;
