//! `s2sctl`: the operator CLI for the gateway's s2s-vpn v1alpha1 API.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(r) = gateway_user::docgen::answer(gateway_api::cli::command(), "1", &args) {
        return match r {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("s2sctl: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    gateway_api::cli::main()
}
