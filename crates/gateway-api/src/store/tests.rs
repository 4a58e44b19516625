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
        .read(|tx| Ok::<_, StoreError>(tx.tx.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = s
        .read(|tx| Ok::<_, StoreError>(tx.tx.query_row("PRAGMA synchronous", [], |r| r.get(0))?))
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
