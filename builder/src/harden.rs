//! Process hardening the builder applies to itself before anything else.

/// Makes this process impossible to dump: no core file (`RLIMIT_CORE` 0, soft and hard, so it
/// cannot be raised again) and not dumpable (`PR_SET_DUMPABLE` 0, which also keeps other
/// processes of the same user from reading its memory through `/proc` or `ptrace`). The builder
/// holds the signing key and every host's PSKs in memory. The same as the applier's
/// `applier::harden::no_core_dumps`, which the builder does not link.
pub fn no_core_dumps() -> std::io::Result<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)?;
    nix::sys::prctl::set_dumpable(false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// In a child process of its own (the test binary re-run with a filter), so the test
    /// process itself stays dumpable for debugging.
    #[test]
    fn no_core_dumps_sets_the_limit_and_the_flag() {
        if std::env::var_os("OVSB_HARDEN_CHILD").is_some() {
            super::no_core_dumps().unwrap();
            assert_eq!(
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap(),
                (0, 0)
            );
            assert!(!nix::sys::prctl::get_dumpable().unwrap());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "harden::tests::no_core_dumps_sets_the_limit_and_the_flag",
                "--nocapture",
            ])
            .env("OVSB_HARDEN_CHILD", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
