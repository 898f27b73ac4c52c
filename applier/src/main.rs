//! `applier`: parses the command line and dispatches; the work is in the library (`applier::cmd`).

use applier::cli::Cli;
use bundle::Exit;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // First: PSKs must never land in a core file.
    if let Err(e) = applier::harden::no_core_dumps() {
        applier::journal::log(
            "applier",
            &format!("warning: cannot disable core dumps: {e}"),
        );
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    match applier::cmd::run(cli) {
        Ok(exit) => exit.into(),
        Err(e) => {
            applier::journal::log("applier", &format!("error: {e:#}"));
            applier::harden::exit_for(&e).into()
        }
    }
}
