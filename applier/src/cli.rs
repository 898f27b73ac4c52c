//! The command line: what `applier` accepts, as clap types. Kept in the library so the man pages
//! and completions can be generated from the same definitions.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Verifies ovs-bundle bundles and applies them to this host.
///
/// Exit codes: 0 success / no changes; 1 failure (host unchanged or rolled back); 2 changes
/// pending (plan, status); 3 rollback failed; 4 another apply is running; 5 nothing applied
/// yet (status); 10 not authentic;
/// 11 malformed; 12 for another host; 13 expired; 14 no trusted keys; 15 refused (serial,
/// content, a pending try); 64 bad usage.
#[derive(Parser)]
#[command(name = "applier", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Args)]
pub struct Global {
    /// Prefix for every host path (/etc, /var/lib, /run): for tests and images.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The OVSDB server socket.
    #[arg(
        long,
        global = true,
        value_name = "unix:PATH",
        default_value = "unix:/var/run/openvswitch/db.sock"
    )]
    pub ovsdb: String,
    /// The OVN northbound database's socket: written only where the bundle carries northbound
    /// state (the fleet's OVN central); a host without the socket has none of our rows there.
    #[arg(
        long,
        global = true,
        value_name = "unix:PATH",
        default_value = "unix:/var/run/ovn/ovnnb_db.sock"
    )]
    pub ovn_nb: String,
    /// Where /proc is (sysctl values are per network namespace).
    #[arg(long, global = true, value_name = "DIR", default_value = "/proc")]
    pub proc: PathBuf,
    /// Seconds to wait for ovsdb-server and ovs-vswitchd.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    pub ovs_timeout: u64,
    /// Seconds to wait for another apply to finish.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10)]
    pub lock_timeout: u64,
    /// Trust this public key (repeatable) instead of ROOT/etc/ovs-bundle/trusted.d/*.pub.
    #[arg(long, global = true, value_name = "PUB")]
    pub trusted_key: Vec<PathBuf>,
    /// The host bundles must be for (default: this host's name).
    #[arg(long, global = true, value_name = "NAME")]
    pub host: Option<String>,
    /// Machine-readable output: every command prints one JSON document on stdout, errors
    /// included (schema version 1).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Args, Clone, Copy)]
pub struct ApplyFlags {
    /// Reconcile only the GRE tunnels on the bundle's bridges; leave everything else alone.
    #[arg(long)]
    pub gre_only: bool,
    /// Accept a bundle whose serial is lower than the highest applied (logged loudly).
    #[arg(long)]
    pub allow_downgrade: bool,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Check a bundle's signature, contents and binding without changing anything.
    Verify {
        /// The bundle (BUNDLE.tgz from `builder build`).
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
    /// Print what applying a bundle would change (exit 0: nothing, 2: something).
    Plan {
        /// The bundle (BUNDLE.tgz from `builder build`).
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        #[command(flatten)]
        flags: ApplyFlags,
    },
    /// Verify a bundle and apply it atomically, as a new generation.
    Apply {
        /// The bundle (BUNDLE.tgz from `builder build`).
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        #[command(flatten)]
        flags: ApplyFlags,
        /// Print the plan and change nothing (same as `plan`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Apply a bundle on trial: it goes back by itself unless confirmed.
    ///
    /// Unless `applier confirm` is run within --timeout, or when a health check fails, the host
    /// goes back to the current generation by itself. The revert does not depend on this
    /// session (it survives SSH dropping); a reboot before confirmation boots the previous
    /// generation.
    #[command(after_help = TRY_HELP)]
    Try {
        /// The bundle to try (BUNDLE.tgz from `builder build`).
        #[arg(required_unless_present = "status", value_name = "BUNDLE")]
        bundle: Option<PathBuf>,
        #[command(flatten)]
        flags: ApplyFlags,
        /// Revert unless confirmed within this time (90s, 5m, 1h).
        #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = duration)]
        timeout: u64,
        /// How long a check may fail before it has passed once (tunnels and IKE need a moment).
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
        settle: u64,
        /// A health check, run with /bin/sh -c every few seconds; exit 0 means healthy
        /// (repeatable).
        #[arg(long = "check", value_name = "CMD")]
        checks: Vec<String>,
        /// Run only the --check commands, not the built-in checks (an underlay route to every
        /// tunnel peer, an IPsec SA to every PSK peer).
        #[arg(long)]
        no_builtin_checks: bool,
        /// Show the pending try and the time left, and change nothing.
        #[arg(long, conflicts_with = "bundle")]
        status: bool,
    },
    /// Keep the generation on trial (`applier try`): it becomes permanent.
    Confirm,
    /// The detached process of `applier try` that runs the checks and reverts (internal).
    #[command(hide = true)]
    TryWatch,
    /// Compare the host with the current generation (exit 0: no drift, 2: drift, 5: nothing
    /// applied yet).
    Status,
    /// Switch back to the previous generation, or to GENERATION (any kept one).
    Rollback {
        /// The generation to make current (default: the one before the current one).
        generation: Option<u64>,
    },
    /// Delete all but the newest KEEP generations (old bundles hold old PSKs). The current
    /// generation, and the generations a --gre-only generation builds on, are always kept.
    Gc {
        /// How many generations to keep.
        #[arg(long, value_name = "N", default_value_t = crate::store::DEFAULT_KEEP)]
        keep: usize,
    },
    /// List the generations: serial, signing key, when applied, and what each changed from the
    /// one before it.
    Generations,
    /// Show what differs between two kept generations (PSKs as fingerprints; exit 0: nothing,
    /// 2: something).
    Diff {
        /// The generation to compare from.
        #[arg(value_name = "A")]
        from: u64,
        /// The generation to compare with (default: the current one).
        #[arg(value_name = "B")]
        to: Option<u64>,
    },
    /// Install a bundle into an offline root (a disk image being built, with --root) as its
    /// current generation: the files an apply leaves, nothing live. Boot applies the rest.
    ///
    /// The generation is recorded as applied at SOURCE_DATE_EPOCH when that is set (as
    /// `builder image host` sets it: the same inputs give the same image), otherwise now.
    Install {
        /// The bundle (BUNDLE.tgz from `builder build`).
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
    /// List the trusted and revoked keys with their key ids.
    Keys,
    /// At boot: finish an interrupted apply, install bundles from the incoming directory, and
    /// otherwise restore the current generation (iptables rules do not survive a reboot).
    Boot {
        /// Cycle interfaces whose stanza changes (when networking is already up).
        #[arg(long)]
        cycle: bool,
    },
}

const TRY_HELP: &str = "While a try is pending, `apply` and `try` are refused; `applier rollback` \
ends it by going back now. The watcher logs to /var/lib/ovs-bundle/try.log (or the journal, \
as the transient unit ovs-bundle-try-N, on systemd hosts).";

/// Durations as people write them; a bare number is refused (seconds? minutes?).
fn duration(s: &str) -> Result<u64, String> {
    bundle::time::parse_duration(s)
}
