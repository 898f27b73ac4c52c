//! `builder`: command-line front end. Parses arguments and dispatches; the work is in the library
//! (`builder::cmd`, one module per subcommand); the command line itself is `builder::cli`.

use builder::cli::{Cli, Cmd};
use builder::cmd::{build, check, cloud_init, image, import, inspect, keygen, ovn_ca};
use bundle::Exit;
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // First: the signing key and PSKs must never land in a core file.
    if let Err(e) = builder::harden::no_core_dumps() {
        eprintln!("builder: warning: cannot disable core dumps: {e}");
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version come here too, on stdout, and are not errors.
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            return exit.into();
        }
    };
    let outcome = match cli.cmd {
        Cmd::Keygen(args) => keygen::run(args),
        Cmd::Check(args) => check::run(args),
        Cmd::Build(args) => build::run(args),
        Cmd::Inspect(args) => inspect::run(args),
        Cmd::CloudInit(args) => cloud_init::run(args),
        Cmd::Import(args) => import::run(args),
        Cmd::Image(args) => image::run(args),
        Cmd::OvnCa(args) => ovn_ca::run(args),
    };
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("builder: error: {e:#}");
            if e.downcast_ref::<builder::cmd::UsageError>().is_some() {
                Exit::Usage.into()
            } else {
                Exit::Failed.into()
            }
        }
    }
}
