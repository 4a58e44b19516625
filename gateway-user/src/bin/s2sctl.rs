//! `s2sctl`: the operator CLI for the gateway's s2s-vpn v1alpha1 API.

fn main() -> std::process::ExitCode {
    gateway_api::cli::main()
}
