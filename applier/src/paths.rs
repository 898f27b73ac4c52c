//! Where the applier reads and writes on a host. Every path hangs off a root (`/` in production,
//! a temporary directory in tests), so no test touches the real `/etc` or `/var`.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Paths {
    root: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Paths { root: root.into() }
    }

    /// `path` (absolute, as on a real host) under the root.
    pub fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where Debian's `ovs-ctl` keeps the system-id it sets at every Open vSwitch start.
    pub fn ovs_system_id_conf(&self) -> PathBuf {
        self.host("/etc/openvswitch/system-id.conf")
    }

    /// One of a chassis' OVN IPsec files (a path of `bundle::ovn::IPSEC_FILES`).
    pub fn ovn_ipsec_file(&self, path: &str) -> PathBuf {
        self.host(path)
    }

    pub fn trusted_dir(&self) -> PathBuf {
        self.host("/etc/ovs-bundle/trusted.d")
    }

    pub fn revoked_dir(&self) -> PathBuf {
        self.host("/etc/ovs-bundle/revoked.d")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.host("/var/lib/ovs-bundle")
    }

    pub fn interfaces_file(&self) -> PathBuf {
        self.host("/etc/network/interfaces")
    }

    pub fn sysctl_dropin(&self) -> PathBuf {
        self.host("/etc/sysctl.d/60-ovs-bundle.conf")
    }

    /// The configuration of this tool's own dnsmasq instance (see docs/applier.md: DHCP).
    pub fn dhcp_conf(&self) -> PathBuf {
        self.host("/etc/ovs-bundle/dnsmasq.conf")
    }

    /// That instance's files: its pid file and its lease database.
    pub fn dhcp_instance(&self) -> crate::system::DhcpInstance {
        crate::system::DhcpInstance {
            conf: self.dhcp_conf(),
            pid_file: self.host("/run/ovs-bundle/dnsmasq.pid"),
            lease_file: self.host("/var/lib/misc/ovs-bundle-dnsmasq.leases"),
        }
    }
}
