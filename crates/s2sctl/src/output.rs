//! What a command prints: human-readable tables by default, `-o json`,
//! `-o yaml`.

use super::*;

/// What to print for a response.
pub(super) enum Shape {
    /// A list under this key, with these columns.
    List(&'static str, &'static [&'static str]),
    /// One object, possibly under a key (`connection` of create).
    One(Option<&'static str>),
    Nothing(&'static str),
    Psk,
    /// A text document printed as it is (device configs).
    Text,
    /// A connection's events, one per line.
    Events,
}

pub(super) const VGW_COLS: &[&str] = &[
    "id",
    "name",
    "status",
    "gateway_type",
    "private_network_id",
    "public_config",
    "tags",
];
pub(super) const CGW_COLS: &[&str] = &[
    "id",
    "name",
    "asn",
    "public_ipv4",
    "public_ipv6",
    "connection_ids",
    "tags",
];
pub(super) const RP_COLS: &[&str] = &[
    "id",
    "name",
    "is_ipv6",
    "prefix_filter_in",
    "prefix_filter_out",
    "tags",
];
pub(super) const CONN_COLS: &[&str] = &[
    "id",
    "name",
    "status",
    "is_ipv6",
    "tunnel_status",
    "bgp_status_ipv4",
    "bgp_status_ipv6",
    "route_propagation_enabled",
    "secret_revision",
];
pub(super) const TYPE_COLS: &[&str] = &["name", "bandwidth", "allowed_connections", "zones"];

pub(super) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) => o
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

pub(super) fn table(
    out: &mut dyn Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |out: &mut dyn Write, cells: Vec<String>| -> std::io::Result<()> {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect();
        writeln!(out, "{}", s.join("  ").trim_end())
    };
    line(out, header.iter().map(|h| h.to_uppercase()).collect())?;
    for r in rows {
        line(out, r.clone())?;
    }
    Ok(())
}

pub(super) fn print(
    out: &mut dyn Write,
    format: Output,
    shape: Shape,
    v: &Value,
) -> Result<(), CliError> {
    match shape {
        Shape::Psk => {
            // The operator asked for the key: print it, nothing else.
            writeln!(out, "{}", v.as_str().unwrap_or_default())?;
            return Ok(());
        }
        Shape::Text => {
            write!(out, "{}", v.as_str().unwrap_or_default())?;
            return Ok(());
        }
        Shape::Events => {
            print_events(out, format, v)?;
            return Ok(());
        }
        _ => {}
    }
    if format != Output::Table {
        let deleted;
        let v = match shape {
            Shape::Nothing(what) => {
                deleted = json!({ "deleted": what });
                &deleted
            }
            _ => v,
        };
        match format {
            Output::Yaml => write!(out, "{}", to_yaml(v))?,
            _ if matches!(shape, Shape::Nothing(_)) => writeln!(out, "{v}")?,
            _ => writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(v).unwrap_or_default()
            )?,
        }
        return Ok(());
    }
    match shape {
        Shape::List(key, cols) => {
            let items = v
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|it| cols.iter().map(|c| cell(&it[*c])).collect())
                .collect();
            table(out, cols, &rows)?;
            writeln!(out, "total_count: {}", cell(&v["total_count"]))?;
        }
        Shape::One(key) => {
            let obj = key.map(|k| &v[k]).unwrap_or(v);
            let rows: Vec<Vec<String>> = obj
                .as_object()
                .map(|o| o.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect())
                .unwrap_or_default();
            table(out, &["field", "value"], &rows)?;
        }
        Shape::Nothing(what) => writeln!(out, "deleted {what}")?,
        Shape::Psk | Shape::Text | Shape::Events => {}
    }
    Ok(())
}

/// `v` as a YAML document (block style, keys in the API's order).
pub(super) fn to_yaml(v: &Value) -> String {
    serde_norway::to_string(v).unwrap_or_default()
}
