//! The commands that need more than one call: connection actions and
//! events (`--follow`), Secret Manager.

use super::*;

/// One page (1000) of a connection's events after `after`.
pub(super) fn fetch_events(c: &Client, id: &str, after: i64) -> Result<Value, CliError> {
    c.call(
        "GET",
        &c.s2s(&format!("connections/{id}/events")),
        &vec![("after", after.to_string()), ("limit", "1000".into())],
        None,
    )
}

/// One line per event, or one JSON object per line with `-o json`.
pub(super) fn print_events(
    out: &mut dyn Write,
    format: Output,
    v: &Value,
) -> Result<usize, CliError> {
    let batch = v["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for e in batch {
        match format {
            Output::Json => writeln!(out, "{e}")?,
            // One YAML document per event, so a follower can stream them.
            Output::Yaml => write!(out, "---\n{}", to_yaml(e))?,
            Output::Table => writeln!(
                out,
                "{}  {:<20} {}",
                cell(&e["created_at"]),
                cell(&e["kind"]),
                cell(&e["message"])
            )?,
        }
    }
    out.flush()?;
    Ok(batch.len())
}

/// `connection events --follow`: polls every second until interrupted.
pub(super) fn follow_events(
    c: &Client,
    id: &str,
    mut after: i64,
    format: Output,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    loop {
        let v = fetch_events(c, id, after)?;
        let n = print_events(out, format, &v)?;
        after = v["next_after"].as_i64().unwrap_or(after);
        if n < 1000 {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

pub(super) fn connection(c: &Client, cmd: ConnCmd) -> Result<(Value, Shape), CliError> {
    let none = Query::new();
    let path = |id: &str, action: &str| {
        if action.is_empty() {
            c.s2s(&format!("connections/{id}"))
        } else {
            c.s2s(&format!("connections/{id}/{action}"))
        }
    };
    Ok(match cmd {
        ConnCmd::Events { id, after, .. } => (fetch_events(c, &id, after)?, Shape::Events),
        ConnCmd::List {
            common,
            statuses,
            is_ipv6,
            route_propagation_enabled,
            routing_policy_ids,
            vpn_gateway_ids,
            customer_gateway_ids,
        } => {
            let mut q = common_query(&common);
            push_all(&mut q, "statuses", &statuses);
            push_opt(&mut q, "is_ipv6", &is_ipv6);
            push_opt(
                &mut q,
                "route_propagation_enabled",
                &route_propagation_enabled,
            );
            push_all(&mut q, "routing_policy_ids", &routing_policy_ids);
            push_all(&mut q, "vpn_gateway_ids", &vpn_gateway_ids);
            push_all(&mut q, "customer_gateway_ids", &customer_gateway_ids);
            (
                c.call("GET", &c.s2s("connections"), &q, None)?,
                Shape::List("connections", CONN_COLS),
            )
        }
        ConnCmd::Get { id } => (
            c.call("GET", &path(&id, ""), &none, None)?,
            Shape::One(None),
        ),
        ConnCmd::Create {
            name,
            vpn_gateway_id,
            customer_gateway_id,
            initiation_policy,
            ipv6,
            ike,
            esp,
            route_propagation,
            routing_policy_v4,
            routing_policy_v6,
            bgp_v4,
            bgp_v6,
            tags,
            project_id,
        } => {
            let b = body(&ops::CreateConnectionRequest {
                name: Some(name),
                is_ipv6: Some(ipv6),
                initiation_policy: Some(initiation_policy),
                ikev2_ciphers: Some(ciphers(&ike)?),
                esp_ciphers: Some(ciphers(&esp)?),
                enable_route_propagation: Some(route_propagation),
                vpn_gateway_id: Some(vpn_gateway_id),
                customer_gateway_id: Some(customer_gateway_id),
                tags: Some(tags),
                project_id,
                secret: None,
                bgp_config_ipv4: bgp_config(&routing_policy_v4, &bgp_v4, "v4")?,
                bgp_config_ipv6: bgp_config(&routing_policy_v6, &bgp_v6, "v6")?,
            })?;
            (
                c.call("POST", &c.s2s("connections"), &none, Some(b))?,
                Shape::One(Some("connection")),
            )
        }
        ConnCmd::Update {
            id,
            name,
            initiation_policy,
            ike,
            esp,
            tags,
        } => {
            let b = body(&ops::UpdateConnectionRequest {
                name,
                tags: tags_update(tags, false),
                initiation_policy,
                ikev2_ciphers: ciphers_if_any(&ike)?,
                esp_ciphers: ciphers_if_any(&esp)?,
            })?;
            (
                c.call("PATCH", &path(&id, ""), &none, Some(b))?,
                Shape::One(None),
            )
        }
        ConnCmd::Delete { id } => {
            c.call("DELETE", &path(&id, ""), &none, None)?;
            (Value::Null, Shape::Nothing("connection"))
        }
        ConnCmd::RenewPsk {
            id,
            generate_revision,
        } => (
            c.call(
                "POST",
                &path(&id, "renew-psk"),
                &none,
                Some(body(&ops::RenewPskRequest {
                    generate_revision: Some(generate_revision),
                })?),
            )?,
            Shape::One(Some("connection")),
        ),
        ConnCmd::ChangePsk {
            id,
            secret_id,
            revision,
        } => (
            c.call(
                "POST",
                &path(&id, "change-psk"),
                &none,
                Some(body(&ops::ChangePskRequest {
                    secret: Some(ops::SecretRef {
                        id: Some(secret_id),
                        revision,
                    }),
                })?),
            )?,
            Shape::One(Some("connection")),
        ),
        ConnCmd::SetRoutingPolicy { id, v4, v6 } => (
            c.call(
                "POST",
                &path(&id, "set-routing-policy"),
                &none,
                Some(body(&one_of(v4, v6))?),
            )?,
            Shape::One(None),
        ),
        ConnCmd::DetachRoutingPolicy { id, v4, v6 } => (
            c.call(
                "POST",
                &path(&id, "detach-routing-policy"),
                &none,
                Some(body(&one_of(v4, v6))?),
            )?,
            Shape::One(None),
        ),
        ConnCmd::EnableRoutePropagation { id } => (
            c.call(
                "POST",
                &path(&id, "enable-route-propagation"),
                &none,
                Some(json!({})),
            )?,
            Shape::One(None),
        ),
        ConnCmd::DisableRoutePropagation { id } => (
            c.call(
                "POST",
                &path(&id, "disable-route-propagation"),
                &none,
                Some(json!({})),
            )?,
            Shape::One(None),
        ),
        ConnCmd::DeviceConfig { id, vendor } => {
            let (_, text) = c.send(
                "GET",
                &path(&id, "device-config"),
                &vec![("vendor", vendor)],
                None,
                "text/plain",
            )?;
            (Value::String(text), Shape::Text)
        }
        ConnCmd::GetPsk { id, revision } => {
            let conn = c.call("GET", &path(&id, ""), &none, None)?;
            let sid = conn["secret_id"].as_str().unwrap_or_default().to_owned();
            let rev = revision
                .map(|r| r.to_string())
                .unwrap_or_else(|| cell(&conn["secret_revision"]));
            let r = c.call(
                "GET",
                &format!(
                    "/secret-manager/v1beta1/regions/{}/secrets/{sid}/versions/{rev}/access",
                    c.region
                ),
                &none,
                None,
            )?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["data"].as_str().unwrap_or_default())
                .map_err(|e| CliError::Argument(format!("secret data is not base64: {e}")))?;
            (
                Value::String(String::from_utf8_lossy(&data).into_owned()),
                Shape::Psk,
            )
        }
    })
}

pub(super) fn secret(
    c: &Client,
    cmd: SecretCmd,
    stdin: &mut dyn std::io::Read,
) -> Result<(Value, Shape), CliError> {
    let none = Query::new();
    let base = format!("/secret-manager/v1beta1/regions/{}/secrets", c.region);
    Ok(match cmd {
        SecretCmd::Create {
            name,
            description,
            tags,
        } => (
            c.call(
                "POST",
                &base,
                &none,
                Some(body(&ops::CreateSecretRequest {
                    name: Some(name),
                    description,
                    tags: Some(tags),
                    protected: Some(false),
                    ..Default::default()
                })?),
            )?,
            Shape::One(None),
        ),
        SecretCmd::Get { id } => (
            c.call("GET", &format!("{base}/{id}"), &none, None)?,
            Shape::One(None),
        ),
        SecretCmd::AddVersion { id, description } => {
            let mut data = zeroize::Zeroizing::new(Vec::new());
            let limit = u64::try_from(gateway_api::secrets::MAX_PSK_LEN).unwrap_or(u64::MAX) + 2;
            std::io::Read::read_to_end(&mut std::io::Read::take(stdin, limit), &mut data)?;
            while data.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                data.pop();
            }
            let b64 = zeroize::Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(&data[..]),
            );
            (
                c.call(
                    "POST",
                    &format!("{base}/{id}/versions"),
                    &none,
                    Some(json!({"data": b64.as_str(), "description": description})),
                )?,
                Shape::One(None),
            )
        }
        SecretCmd::Access { id, revision } => {
            let r = c.call(
                "GET",
                &format!("{base}/{id}/versions/{revision}/access"),
                &none,
                None,
            )?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(r["data"].as_str().unwrap_or_default())
                .map_err(|e| CliError::Argument(format!("secret data is not base64: {e}")))?;
            (
                Value::String(String::from_utf8_lossy(&data).into_owned()),
                Shape::Psk,
            )
        }
    })
}

pub(super) fn one_of(v4: Option<String>, v6: Option<String>) -> ops::RoutingPolicyOneOf {
    match (v4, v6) {
        (Some(a), _) => ops::RoutingPolicyOneOf {
            routing_policy_v4: Some(a),
            routing_policy_v6: None,
        },
        (None, b) => ops::RoutingPolicyOneOf {
            routing_policy_v4: None,
            routing_policy_v6: b,
        },
    }
}
