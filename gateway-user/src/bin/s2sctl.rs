//! `s2sctl`: the operator CLI for the gateway's s2s-vpn v1alpha1 API.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(r) = gateway_user::docgen::answer(s2sctl::command(), "1", &args) {
        return match r {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("s2sctl: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    s2sctl::main()
}
