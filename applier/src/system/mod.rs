//! The one seam for side effects. Everything the applier does to a host goes through [`System`],
//! in typed operations: OVS changes as [`OvsChange`]s, the firewall as [`Chains`], files, kernel
//! settings and ifupdown. [`RealSystem`] does it for real; the in-memory [`fake::FakeSystem`]
//! (tests only) records every call and fails or "crashes" at any chosen step, which is how the
//! engine's rollback and crash recovery are tested without root.

mod dnsmasq;
#[cfg(test)]
pub mod fake;
mod real;

pub use real::{atomic_write, temp_name, temp_of, RealSystem};

use crate::ovs::{Live, OvsChange};
use crate::ovsdb::OvsdbError;
use bundle::firewall::Family;
use bundle::Chains;
use std::path::{Path, PathBuf};

/// A failed operation, with what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error(transparent)]
    Ovsdb(Box<OvsdbError>),
    #[error("{0}")]
    Ovs(String),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    /// The fake's injected failure (tests only).
    #[error("injected failure at step {0}")]
    Injected(String),
}

impl From<OvsdbError> for SysError {
    fn from(e: OvsdbError) -> Self {
        SysError::Ovsdb(Box::new(e))
    }
}

impl SysError {
    pub(crate) fn file(path: &Path, source: std::io::Error) -> SysError {
        SysError::File {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// This tool's dnsmasq instance: started with `--conf-file` (so no other configuration of the
/// host is read), its own pid file and lease database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpInstance {
    pub conf: PathBuf,
    pub pid_file: PathBuf,
    pub lease_file: PathBuf,
}

/// `ifdown` or `ifup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAction {
    Down,
    Up,
}

pub trait System {
    /// The rows of the tables this tool reads, in one read (as of the last `read_begin`, if
    /// one is pending).
    fn ovs_read(&mut self) -> Result<Live, SysError>;
    /// Makes `changes` (planned from `base`) in one transaction, guarded by the values of `base`;
    /// returns the configuration number ovs-vswitchd must reach for them to be in force.
    fn ovs_apply(
        &mut self,
        changes: &[OvsChange],
        base: &Live,
        comment: &str,
    ) -> Result<i64, SysError>;
    /// The OVN northbound database's logical switches and ports; `present: false` where this
    /// host has none (a chassis).
    fn nb_read(&mut self) -> Result<crate::nb::NbLive, SysError>;
    /// Makes `changes` (planned from `base`) to the northbound database in one transaction,
    /// guarded by the values of `base`, every row written marked as `owner`'s.
    fn nb_apply(
        &mut self,
        changes: &[crate::nb::NbChange],
        base: &crate::nb::NbLive,
        owner: &str,
        comment: &str,
    ) -> Result<(), SysError>;
    /// Waits until ovs-vswitchd reports having applied configuration `cfg`.
    fn ovs_wait_applied(&mut self, cfg: i64) -> Result<(), SysError>;
    /// `interface NAME: ERROR` for each named interface ovs-vswitchd reports an error on.
    fn ovs_interface_errors(&mut self, names: &[&str]) -> Result<Vec<String>, SysError>;
    /// Starts the reads of the host's state (the OVS rows, the chains) now, in the background,
    /// for the next [`System::ovs_read`] and [`System::firewall_read`] to return: ovsdb-server
    /// takes tens of milliseconds to produce 1,000 tunnels' rows and `iptables-save` as long
    /// for their 1,000 IPsec guard rules, time that then overlaps with the bundle's
    /// verification. A change to the host (an OVS transaction, a firewall write, a kernel
    /// setting, an ifup/ifdown, whose hooks may change OVS or iptables) discards what is still
    /// pending. A hint: an implementation may do nothing here and read when asked.
    fn read_begin(&mut self) {}
    /// Drops reads [`System::read_begin`] started that nobody took: an operation that ends
    /// early must not leave the next one a state from before it.
    fn read_cancel(&mut self) {}
    /// This tool's chains of `family` as they are: iptables (as of the last `read_begin`, if
    /// one is pending) or ip6tables.
    fn firewall_read(&mut self, family: Family) -> Result<Chains, SysError>;
    /// Turns the chains from `current` into `want` (both of `want.family`) in one commit per
    /// table (only a dry run of that commit when `test_only`), with `iptables-restore` or
    /// `ip6tables-restore`.
    fn firewall_write(
        &mut self,
        want: &Chains,
        current: &Chains,
        test_only: bool,
    ) -> Result<(), SysError>;
    /// A file's content, `None` if it does not exist.
    fn read_file(&mut self, path: &Path) -> Result<Option<Vec<u8>>, SysError>;
    /// Replaces `path` atomically: temporary file, fsync, rename, fsync of the directory.
    fn write_file(&mut self, path: &Path, data: &[u8], mode: u32) -> Result<(), SysError>;
    /// Removes a file (no error if it is gone already).
    fn remove_file(&mut self, path: &Path) -> Result<(), SysError>;
    /// Renames a file within one filesystem (atomic), then syncs the target's directory.
    fn rename(&mut self, from: &Path, to: &Path) -> Result<(), SysError>;
    /// Names in a directory (empty if it does not exist).
    fn list_dir(&mut self, path: &Path) -> Result<Vec<String>, SysError>;
    /// Creates a directory and its parents, the last with `mode`.
    fn create_dir(&mut self, path: &Path, mode: u32) -> Result<(), SysError>;
    /// Removes an empty directory (no error if it is gone or not empty).
    fn remove_dir(&mut self, path: &Path) -> Result<(), SysError>;
    /// Writes a kernel setting (a file under /proc/sys: written in place, never created).
    fn write_sysctl(&mut self, path: &Path, value: &[u8]) -> Result<(), SysError>;
    /// `ifdown`/`ifup` of one interface, with the given interfaces file.
    fn ifupdown(
        &mut self,
        action: IfAction,
        iface: &str,
        interfaces: &Path,
    ) -> Result<(), SysError>;
    /// Whether this tool's dnsmasq instance runs: its pid file names a live dnsmasq started with
    /// its configuration file.
    fn dhcp_running(&mut self, inst: &DhcpInstance) -> Result<bool, SysError>;
    /// Stops the instance if it runs; then, if `start`, starts it with its configuration file.
    fn dhcp_restart(&mut self, inst: &DhcpInstance, start: bool) -> Result<(), SysError>;
    /// Has a running strongSwan (charon) load the CA certificates in `/etc/ipsec.d/cacerts/`
    /// again; nothing when none runs (charon loads them when it starts).
    fn ipsec_reread_cacerts(&mut self) -> Result<(), SysError>;
}
