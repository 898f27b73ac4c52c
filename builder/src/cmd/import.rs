//! `builder import ovs-crate`: a profiles directory from the original tool's EDN fleet map,
//! then `builder check` on it, so the operator sees at once what is left to do.

use crate::import::{plan, write::write_all};
use crate::profile::load_fleet;
use anyhow::Result;
use bundle::Exit;
use clap::{Args, Subcommand};
use std::path::PathBuf;

// No doc comment here: clap would take it as the subcommand's help, which `main.rs` sets.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub from: ImportFrom,
}

#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// Convert ovs-crate's {:host-config ...} map (EDN) into a profiles directory.
    ///
    /// Writes OUT/hosts/<host>.toml per host and each PSK to OUT/secrets/*.psk (mode 0600, never
    /// inline); copies interfaces files found beside the map (a path, or
    /// (utils/resource-path "x") as resources/x) to OUT/files/, and lists those it cannot;
    /// converts 10.20.20.0/255.255.255.0 to 10.20.20.0/24; accepts :ovs-config and :ovs-info;
    /// infers each host's underlay_ip where the fleet's tunnels make it unambiguous and says
    /// where to add it where not. Then checks the result as `builder check OUT` does.
    ///
    /// Exit 0 if the imported profiles are valid; 1 if the map has errors (nothing is
    /// written), files would be overwritten without --force, or the result needs edits (each
    /// listed with its file:line).
    OvsCrate(OvsCrateArgs),
}

#[derive(Debug, Args)]
pub struct OvsCrateArgs {
    /// The EDN file holding ovs-crate's environment map, {:host-config {"host" {...}}}.
    pub file: PathBuf,
    /// The profiles directory to create (or add to): OUT/hosts, OUT/secrets, OUT/files.
    #[arg(long, value_name = "OUT")]
    pub out: PathBuf,
    /// Replace files of the same names already in OUT (otherwise nothing is written).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: ImportArgs) -> Result<Exit> {
    let ImportFrom::OvsCrate(args) = args.from;
    let plan = match plan(&args.file, &args.out) {
        Ok(p) => p,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            let errors = diags
                .iter()
                .filter(|d| d.severity == crate::diag::Severity::Error)
                .count();
            eprintln!(
                "builder: {errors} error(s) in {}; nothing was written",
                args.file.display()
            );
            return Ok(Exit::Failed);
        }
    };
    // WriteError names the files and says what to do: no context.
    let written = write_all(&args.out, &plan.files, args.force)?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    println!(
        "{}: imported {} host(s) into {}",
        args.file.display(),
        plan.hosts,
        args.out.display()
    );
    for n in &plan.notes {
        eprintln!("{n}");
    }
    // The check of `builder check OUT`, with an ending that says what was done (nothing was
    // "built" here) and what to do next.
    match load_fleet(&args.out) {
        Ok(fleet) => {
            for n in &fleet.notes {
                eprintln!("{n}");
            }
            println!(
                "{}: {} host(s), all valid",
                args.out.display(),
                fleet.hosts.len()
            );
            Ok(Exit::Ok)
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            eprintln!(
                "builder: the imported profiles have {} error(s) to fix by hand (above); then run \
                 `builder check {}`",
                diags
                    .iter()
                    .filter(|d| d.severity == crate::diag::Severity::Error)
                    .count(),
                args.out.display()
            );
            Ok(Exit::Failed)
        }
    }
}
