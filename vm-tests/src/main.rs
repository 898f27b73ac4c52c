//! `vm-tests`: builds bundles with the real `builder`, boots Debian guests under QEMU, applies the
//! bundles with the real `applier` inside them, and checks from inside the guests that the network
//! is what the profiles say. One line per scenario with its duration, then a summary.
//!
//! Usage: vm-tests [--only N]... (from `vm-tests/run`, which builds the guest, the binaries and the
//! applier package). `vm-tests --serve-http DIR` is what QEMU runs per connection of the cloud-init
//! guest to the test apt repository ([`http`]).
//! With OVSB_VM_TRACE set, every retry of a waiting check is printed to stderr.

mod fleet;
mod guest;
mod http;
mod image;
mod scenarios;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir] = &argv[..] {
        if flag == "--serve-http" {
            let r = http::serve(Path::new(dir), std::io::stdin(), std::io::stdout());
            std::process::exit(i32::from(r.is_err()));
        }
    }
    let mut only: Vec<u32> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => only.push(args.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
            other => {
                eprintln!("vm-tests: unknown argument {other:?}; usage: vm-tests [--only N]...");
                std::process::exit(64);
            }
        }
    }
    let started = Instant::now();
    let results = match run(&only) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vm-tests: setup failed: {e:#}");
            println!("vm-tests: 0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    let failed = results.iter().filter(|ok| !**ok).count();
    println!(
        "vm-tests: {} passed, {failed} failed ({:.0} s)",
        results.len() - failed,
        started.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(failed > 0));
}

fn run(only: &[u32]) -> Result<Vec<bool>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = root
        .join(".cache")
        .join(format!("run-{}", std::process::id()));
    let artifacts = root.join("artifacts");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&work)?;
    let bins = PathBuf::from(
        std::env::var("OVSB_BIN_DIR")
            .unwrap_or_else(|_| root.join("../target/release").display().to_string()),
    );
    let images = guest::Images {
        kernel: root.join(".cache/guest/vmlinuz"),
        initrd: root.join(".cache/guest/initramfs.gz"),
        root: root.join(".cache/guest/root.img"),
    };
    anyhow::ensure!(
        images.root.exists(),
        "no guest image: run vm-tests/run (it builds one)"
    );
    let debs = PathBuf::from(
        std::env::var("OVSB_DEB_DIR")
            .unwrap_or_else(|_| root.join(".cache/debs").display().to_string()),
    );
    let fleet = fleet::Fleet::prepare(&root.join("../profiles"), &work, &bins, &debs)
        .context("building the test fleet")?;
    let mut ctx = scenarios::Ctx::new(fleet, images, work.clone(), artifacts);
    let result = scenarios::run_all(&mut ctx, only);
    ctx.shutdown();
    if result.as_ref().is_ok_and(|r| r.iter().all(|ok| *ok)) {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}
