//! Loader errors an operator sees (no privilege needed: the interface
//! check comes before anything touches BPF).

use gateway_config::Config;
use gateway_user::dataplane::xdp::{XdpDataplane, XdpError};

fn config(wan: &str, lan: &str) -> Config {
    Config::parse(&format!(
        "[interfaces]\nwan = \"{wan}\"\nlan = \"{lan}\"\nxdp_mode = \"native\"\n"
    ))
    .expect("test config")
}

#[test]
fn missing_interface_is_one_clear_line() {
    let err = XdpDataplane::load(&config("s2s-nowan0", "s2s-nolan0"))
        .expect_err("the interfaces do not exist");
    assert!(
        matches!(&err, XdpError::InterfaceNotFound { name } if name == "s2s-nowan0"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "interface \"s2s-nowan0\" does not exist");
}

#[test]
fn operator_errors_are_single_lines() {
    let errors = [
        XdpError::InterfaceNotFound {
            name: "wan0".into(),
        },
        XdpError::PermissionDenied {
            op: "loading eBPF maps",
            source: Box::new(std::io::Error::from_raw_os_error(libc_eperm())),
        },
        XdpError::BpffsMissing("/sys/fs/bpf".into()),
        XdpError::TunnelIdOutOfRange(5000),
        XdpError::Verifier {
            program: "wan_ingress",
            last_line: "invalid access to packet".into(),
            log: "line 1\nline 2\ninvalid access to packet\n".into(),
        },
    ];
    for e in errors {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
    }
}

fn libc_eperm() -> i32 {
    1
}
