//! Development entry point of `s2sctl` (the lead ships the real binary).
fn main() -> std::process::ExitCode {
    gateway_api::cli::main()
}
