//! The reads and writes of one store transaction ([`Tx`]): resources,
//! relations, statuses, events and sealed secrets.

use super::*;

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

    pub(super) fn delete_row(&mut self, table: &'static str, id: &str) -> Result<bool, StoreError> {
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
