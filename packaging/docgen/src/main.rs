//! `docgen OUTDIR`: writes the man pages (one per command and subcommand) and the bash, zsh and
//! fish completions of `applier` and `builder` under OUTDIR, from the same clap definitions the
//! binaries parse with. `debian/rules` runs it at package build time; the output is
//! deterministic (no dates), so the packages stay reproducible.
//!
//! Layout: OUTDIR/{applier,builder}/man/NAME.SECTION and
//! OUTDIR/{applier,builder}/completions/{bash/NAME,zsh/_NAME,fish/NAME.fish}.

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use std::path::{Path, PathBuf};

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: docgen OUTDIR");
        std::process::exit(64);
    };
    let out = PathBuf::from(out);
    // The applier runs as root from /usr/sbin: section 8. The builder is a user command: 1.
    generate(applier::cli::Cli::command(), "8", &out.join("applier"))?;
    generate(builder::cli::Cli::command(), "1", &out.join("builder"))?;
    Ok(())
}

/// Man pages and completions of one binary under `dir`.
fn generate(cmd: Command, section: &str, dir: &Path) -> Result<()> {
    // build() propagates global arguments and the version to the subcommands.
    let mut cmd = cmd;
    cmd.build();
    let man = dir.join("man");
    std::fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    write_pages(&cmd, cmd.get_name(), section, &man)?;
    let name = cmd.get_name().to_string();
    use clap_complete::Shell;
    for (shell, file) in [
        (Shell::Bash, format!("bash/{name}")),
        (Shell::Zsh, format!("zsh/_{name}")),
        (Shell::Fish, format!("fish/{name}.fish")),
    ] {
        let path = dir.join("completions").join(file);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), &name, &mut buf);
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `NAME.SECTION` for `cmd`, then `NAME-SUB.SECTION` for each subcommand (recursively), named the
/// way `man applier-apply` finds them.
fn write_pages(cmd: &Command, name: &str, section: &str, dir: &Path) -> Result<()> {
    // clap takes names as &'static str unless its "string" feature is on (which would rebuild
    // clap for the whole workspace); this one-shot tool leaks the few it makes instead.
    let static_name: &'static str = Box::leak(name.to_string().into_boxed_str());
    let page = cmd
        .clone()
        .name(static_name)
        .bin_name(name.replace('-', " "));
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        .section(section)
        .manual("ovs-bundle")
        .render(&mut buf)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = dir.join(format!("{name}.{section}"));
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), section, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_per_subcommand_and_three_completions_each() {
        let dir = tempfile::tempdir().unwrap();
        generate(applier::cli::Cli::command(), "8", &dir.path().join("a")).unwrap();
        generate(builder::cli::Cli::command(), "1", &dir.path().join("b")).unwrap();
        let man = std::fs::read_to_string(dir.path().join("a/man/applier-apply.8")).unwrap();
        assert!(man.contains("gre\\-only"), "{man}");
        assert!(dir.path().join("a/man/applier.8").exists());
        assert!(dir.path().join("b/man/builder-cloud-init.1").exists());
        for sub in applier::cli::Cli::command().get_subcommands() {
            let page = format!("a/man/applier-{}.8", sub.get_name());
            assert!(dir.path().join(&page).exists(), "{page}");
        }
        for f in ["bash/applier", "zsh/_applier", "fish/applier.fish"] {
            assert!(dir.path().join("a/completions").join(f).exists(), "{f}");
        }
    }

    #[test]
    fn output_is_deterministic() {
        let (x, y) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(builder::cli::Cli::command(), "1", x.path()).unwrap();
        generate(builder::cli::Cli::command(), "1", y.path()).unwrap();
        let page = |d: &Path| std::fs::read(d.join("man/builder-build.1")).unwrap();
        assert_eq!(page(x.path()), page(y.path()));
    }
}
