//! `s2sctl`: a command-line client of the resource API, one subcommand per
//! endpoint, human-readable tables by default, `-o json` and `-o yaml` for
//! scripts, and `--wait` for the changes that the agent carries out.
//!
//! It speaks to the API through `gateway_api::client` (plain HTTP, no TLS
//! stack: the API listens on a local or management address) and builds its
//! request bodies from the API's own request types. [`run`] is the testable
//! core: arguments in, output written to a `Write`; [`main`] wires it to
//! the process (the `s2sctl` binary of `gateway-user`, which also generates
//! its man page).

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

use gateway_api::ops;

mod args;
mod client;
mod commands;
mod output;
mod wait;
use args::*;
use client::*;
use commands::*;
use output::*;
use wait::*;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(#[from] clap::Error),
    #[error("API error (HTTP {status}): {message}")]
    Api {
        status: u16,
        message: String,
        body: Value,
    },
    #[error("cannot reach the API at {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("invalid argument: {0}")]
    Argument(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{what} did not settle within {secs} s: {last}")]
    Timeout {
        what: String,
        secs: u64,
        last: String,
    },
    #[error("{what} failed: {last}")]
    Failed { what: String, last: String },
}

/// Runs `s2sctl` with `args` (including the program name), writing the
/// result to `out`; standard input is only read by `secret add-version`.
pub fn run<I, T>(args: I, out: &mut dyn Write) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with_input(args, &mut std::io::stdin(), out)
}

/// [`run`] with an explicit standard input.
pub fn run_with_input<I, T>(
    args: I,
    stdin: &mut dyn std::io::Read,
    out: &mut dyn Write,
) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    run_with_io(args, stdin, out, &mut std::io::stderr())
}

/// [`run_with_input`] with an explicit destination for `--wait`'s progress
/// lines (standard error otherwise).
pub fn run_with_io<I, T>(
    args: I,
    stdin: &mut dyn std::io::Read,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<(), CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let settle = if cli.wait {
        Some(Settle::of(&cli.cmd).ok_or_else(|| {
            CliError::Argument(
                "--wait applies to create, update and delete of a vpn-gateway or a connection"
                    .into(),
            )
        })?)
    } else {
        None
    };
    let token = cli
        .token
        .clone()
        .ok_or_else(|| CliError::Argument("no API token: pass --token or set S2S_TOKEN".into()))?;
    let c = Client {
        api: gateway_api::client::Client::new(&cli.api_url, &token, &cli.region),
        region: cli.region.clone(),
    };
    let none = Query::new();
    let (v, shape) = match cli.cmd {
        Cmd::GatewayType {
            cmd: TypeCmd::List(p),
        } => (
            c.call("GET", &c.s2s("vpn-gateway-types"), &page_query(&p), None)?,
            Shape::List("gateway_types", TYPE_COLS),
        ),
        Cmd::VpnGateway { cmd } => match cmd {
            VgwCmd::List {
                common,
                statuses,
                gateway_types,
                private_network_ids,
            } => {
                let mut q = common_query(&common);
                push_all(&mut q, "statuses", &statuses);
                push_all(&mut q, "gateway_types", &gateway_types);
                push_all(&mut q, "private_network_ids", &private_network_ids);
                (
                    c.call("GET", &c.s2s("vpn-gateways"), &q, None)?,
                    Shape::List("gateways", VGW_COLS),
                )
            }
            VgwCmd::Get { id } => (
                c.call("GET", &c.s2s(&format!("vpn-gateways/{id}")), &none, None)?,
                Shape::One(None),
            ),
            VgwCmd::Create {
                name,
                gateway_type,
                private_network_id,
                ipam_ipv4_id,
                ipam_ipv6_id,
                zone,
                tags,
                project_id,
            } => {
                let public_config =
                    (ipam_ipv4_id.is_some() || ipam_ipv6_id.is_some()).then_some(ops::IpamPair {
                        ipam_ipv4_id,
                        ipam_ipv6_id,
                    });
                let b = body(&ops::CreateVpnGatewayRequest {
                    name: Some(name),
                    gateway_type: Some(gateway_type),
                    private_network_id: Some(private_network_id),
                    tags: Some(tags),
                    project_id,
                    zone,
                    public_config,
                    ..Default::default()
                })?;
                (
                    c.call("POST", &c.s2s("vpn-gateways"), &none, Some(b))?,
                    Shape::One(None),
                )
            }
            VgwCmd::Update {
                id,
                name,
                tags,
                clear_tags,
                gateway_type,
            } => {
                let b = body(&ops::UpdateVpnGatewayRequest {
                    name,
                    tags: tags_update(tags, clear_tags),
                    gateway_type,
                })?;
                (
                    c.call(
                        "PATCH",
                        &c.s2s(&format!("vpn-gateways/{id}")),
                        &none,
                        Some(b),
                    )?,
                    Shape::One(None),
                )
            }
            VgwCmd::Delete { id } => (
                c.call("DELETE", &c.s2s(&format!("vpn-gateways/{id}")), &none, None)?,
                Shape::One(None),
            ),
        },
        Cmd::CustomerGateway { cmd } => match cmd {
            CgwCmd::List { common } => (
                c.call(
                    "GET",
                    &c.s2s("customer-gateways"),
                    &common_query(&common),
                    None,
                )?,
                Shape::List("gateways", CGW_COLS),
            ),
            CgwCmd::Get { id } => (
                c.call(
                    "GET",
                    &c.s2s(&format!("customer-gateways/{id}")),
                    &none,
                    None,
                )?,
                Shape::One(None),
            ),
            CgwCmd::Create {
                name,
                asn,
                ipv4,
                ipv6,
                tags,
                project_id,
            } => {
                let b = body(&ops::CreateCustomerGatewayRequest {
                    name: Some(name),
                    asn: Some(asn),
                    ipv4_public: ipv4,
                    ipv6_public: ipv6,
                    tags: Some(tags),
                    project_id,
                })?;
                (
                    c.call("POST", &c.s2s("customer-gateways"), &none, Some(b))?,
                    Shape::One(None),
                )
            }
            CgwCmd::Update {
                id,
                name,
                asn,
                ipv4,
                ipv6,
                tags,
                clear_tags,
            } => {
                let b = body(&ops::UpdateCustomerGatewayRequest {
                    name,
                    tags: tags_update(tags, clear_tags),
                    ipv4_public: ipv4,
                    ipv6_public: ipv6,
                    asn,
                })?;
                (
                    c.call(
                        "PATCH",
                        &c.s2s(&format!("customer-gateways/{id}")),
                        &none,
                        Some(b),
                    )?,
                    Shape::One(None),
                )
            }
            CgwCmd::Delete { id } => {
                c.call(
                    "DELETE",
                    &c.s2s(&format!("customer-gateways/{id}")),
                    &none,
                    None,
                )?;
                (Value::Null, Shape::Nothing("customer gateway"))
            }
        },
        Cmd::RoutingPolicy { cmd } => match cmd {
            RpCmd::List { common, ipv6 } => {
                let mut q = common_query(&common);
                push_opt(&mut q, "ipv6", &ipv6);
                (
                    c.call("GET", &c.s2s("routing-policies"), &q, None)?,
                    Shape::List("routing_policies", RP_COLS),
                )
            }
            RpCmd::Get { id } => (
                c.call(
                    "GET",
                    &c.s2s(&format!("routing-policies/{id}")),
                    &none,
                    None,
                )?,
                Shape::One(None),
            ),
            RpCmd::Create {
                name,
                ipv6,
                prefix_in,
                prefix_out,
                tags,
                project_id,
            } => {
                let b = body(&ops::CreateRoutingPolicyRequest {
                    name: Some(name),
                    is_ipv6: Some(ipv6),
                    prefix_filter_in: Some(prefix_in),
                    prefix_filter_out: Some(prefix_out),
                    tags: Some(tags),
                    project_id,
                })?;
                (
                    c.call("POST", &c.s2s("routing-policies"), &none, Some(b))?,
                    Shape::One(None),
                )
            }
            RpCmd::Update {
                id,
                name,
                prefix_in,
                prefix_out,
                tags,
            } => {
                let b = body(&ops::UpdateRoutingPolicyRequest {
                    name,
                    tags: tags_update(tags, false),
                    prefix_filter_in: (!prefix_in.is_empty()).then_some(prefix_in),
                    prefix_filter_out: (!prefix_out.is_empty()).then_some(prefix_out),
                })?;
                (
                    c.call(
                        "PATCH",
                        &c.s2s(&format!("routing-policies/{id}")),
                        &none,
                        Some(b),
                    )?,
                    Shape::One(None),
                )
            }
            RpCmd::Delete { id } => {
                c.call(
                    "DELETE",
                    &c.s2s(&format!("routing-policies/{id}")),
                    &none,
                    None,
                )?;
                (Value::Null, Shape::Nothing("routing policy"))
            }
        },
        Cmd::Connection {
            cmd:
                ConnCmd::Events {
                    id,
                    follow: true,
                    after,
                },
        } => return follow_events(&c, &id, after, cli.output, out),
        Cmd::Connection { cmd } => connection(&c, cmd)?,
        Cmd::Secret { cmd } => secret(&c, cmd, stdin)?,
    };
    if let Some(settle) = settle {
        let timeout = std::time::Duration::from_secs(cli.wait_timeout);
        let settled = wait_settled(&c, &settle, &v, timeout, progress)?;
        if !settled.is_null() {
            return print(out, cli.output, Shape::One(None), &settled);
        }
    }
    print(out, cli.output, shape, &v)
}

/// The command-line definition, for generated man pages and shell
/// completions (`cargo xtask package`).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// The `s2sctl` process: parses `std::env::args`, prints to stdout, errors
/// to stderr (exit 2 for usage errors, 1 otherwise).
pub fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(std::env::args_os(), &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(e)) => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("s2sctl: {e}");
            if let CliError::Api { body, .. } = &e {
                if let Some(details) = body.get("details") {
                    eprintln!("details: {details}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_syntax() {
        let one = |s: &str| body(&ciphers(&[s.to_owned()]).unwrap()[0]).unwrap();
        assert_eq!(
            one("aes256-sha256-modp2048"),
            json!({"encryption": "aes256", "integrity": "sha256", "dh_group": "modp2048"})
        );
        assert_eq!(
            one("aes256gcm/ecp256"),
            json!({"encryption": "aes256gcm", "dh_group": "ecp256"})
        );
        for bad in ["des-sha1", "sha256", "aes256-aes128"] {
            assert!(ciphers(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_errors_are_usage() {
        let mut out = Vec::new();
        let e = run(["s2sctl", "connection", "frobnicate"], &mut out).unwrap_err();
        assert!(matches!(e, CliError::Usage(_)));
        let e = run(
            [
                "s2sctl",
                "--token",
                "t",
                "connection",
                "set-routing-policy",
                "x",
            ],
            &mut out,
        )
        .unwrap_err();
        assert!(matches!(e, CliError::Usage(_)), "{e}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn connection_get_shows_the_tunnel_mtus() {
        let v = json!({
            "id": "c",
            "tunnel_status_ipv4": "up",
            "tunnel_mtu_ipv4": {"inner_mtu": 1438, "tcp_mss_ipv4": 1398,
                                "tcp_mss_ipv6": 1378, "mss_clamp": true},
            "tunnel_mtu_ipv6": null,
        });
        let mut out = Vec::new();
        print(&mut out, Output::Table, Shape::One(None), &v).unwrap();
        let s = String::from_utf8(out).unwrap();
        let line = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .map(|l| l[k.len()..].trim().to_owned())
        };
        let v4 = line("tunnel_mtu_ipv4").unwrap();
        for part in [
            "inner_mtu=1438",
            "tcp_mss_ipv4=1398",
            "tcp_mss_ipv6=1378",
            "mss_clamp=true",
        ] {
            assert!(v4.split(' ').any(|p| p == part), "{part} in {v4}");
        }
        assert_eq!(line("tunnel_mtu_ipv6").as_deref(), Some("-"));
    }

    #[test]
    fn table_is_aligned() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["id", "name"],
            &[vec!["1".into(), "a".into()], vec!["22".into(), "bb".into()]],
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "ID  NAME\n1   a\n22  bb\n");
    }
}
