//! Man pages and shell completions generated from the clap definitions of
//! `s2s-gateway` and `s2sctl` (what `cargo xtask package` installs), so
//! they never drift from the binaries' real options.

use std::io::Write;

use clap_complete::Shell;

/// Writes the man page (roff) of `cmd` to `out`, in manual `section`
/// (8 for the daemon, 1 for the CLI).
pub fn man(cmd: clap::Command, section: &str, out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(cmd).section(section).render(out)
}

/// Writes `shell`'s completion script for `cmd` to `out`.
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// The hidden `__man` / `__completions SHELL` arguments both binaries
/// answer (before any other parsing); `None` when `args` are not those.
pub fn answer(cmd: clap::Command, section: &str, args: &[String]) -> Option<std::io::Result<()>> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.get(1).map(String::as_str) {
        Some("__man") => Some(man(cmd, section, &mut out)),
        Some("__completions") => {
            let shell = args.get(2).and_then(|s| s.parse::<Shell>().ok());
            Some(match shell {
                Some(shell) => {
                    completions(cmd, shell, &mut out);
                    Ok(())
                }
                None => Err(std::io::Error::other(
                    "__completions needs a shell: bash, zsh, fish, elvish or powershell",
                )),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_and_completions_name_the_real_subcommands() {
        let mut page = Vec::new();
        man(s2sctl::command(), "1", &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains(".TH s2sctl 1"), "{page}");
        assert!(page.contains("connection"), "{page}");
        let mut bash = Vec::new();
        completions(s2sctl::command(), Shell::Bash, &mut bash);
        let bash = String::from_utf8(bash).unwrap();
        assert!(
            bash.contains("s2sctl") && bash.contains("device-config"),
            "{bash}"
        );
    }
}
