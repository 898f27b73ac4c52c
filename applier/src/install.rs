//! `applier install`: a bundle put into an offline root (a disk image being built, mounted) as
//! its current generation, leaving what an apply would leave on disk (the generation store, the
//! interfaces file, the sysctl drop-in, the dnsmasq configuration) and touching nothing live: no
//! OVS, no iptables, no sysctl values, no dnsmasq. At first boot the boot unit restores that generation like any later boot.

use crate::engine::Applier;
use crate::error::ApplyError;
use crate::state::HostState;
use crate::store::GenMeta;
use bundle::sha256_hex;

impl Applier<'_> {
    /// Verifies `bytes` (trust, host, expiry against the real time, serial) and makes it the
    /// current generation of the root this applier's paths point into, recorded as applied at
    /// `applied_at` (an image build passes its SOURCE_DATE_EPOCH, so that the same inputs give the
    /// same image bytes). Returns the generation number.
    pub fn install_offline(&mut self, bytes: &[u8], applied_at: u64) -> Result<u64, ApplyError> {
        let verified = self.verify(bytes, true).map_err(ApplyError::Verify)?;
        let serial = verified.manifest.serial;
        let sha = sha256_hex(bytes);
        self.check_serial(serial, &sha, false)?;
        let desired = HostState::from_bundle(&verified).map_err(ApplyError::Refused)?;
        self.store.init(self.sys).map_err(ApplyError::Unchanged)?;
        let n = self
            .store
            .next_number(self.sys)
            .map_err(ApplyError::Unchanged)?;
        let meta = GenMeta {
            host: verified.manifest.host.clone(),
            serial,
            sha256: sha,
            applied_at,
            gre_only_base: None,
            // A freshly installed Debian forwards nothing: what leaving a forwarder puts back.
            ip_forward_before: desired.ip_forward.as_ref().map(|_| "0".to_string()),
            ip6_forward_before: desired.ip6_forward.as_ref().map(|_| "0".to_string()),
        };
        let paths = self.loc.paths.clone();
        let write = |app: &mut Self| -> Result<(), crate::system::SysError> {
            app.store.write_generation(app.sys, n, bytes, &meta)?;
            if let Some(parent) = paths.interfaces_file().parent() {
                app.sys.create_dir(parent, 0o755)?;
            }
            let interfaces = desired.interfaces.as_deref().unwrap_or_default();
            app.sys
                .write_file(&paths.interfaces_file(), interfaces, 0o644)?;
            match &desired.sysctl {
                Some(data) => {
                    if let Some(parent) = paths.sysctl_dropin().parent() {
                        app.sys.create_dir(parent, 0o755)?;
                    }
                    app.sys.write_file(&paths.sysctl_dropin(), data, 0o644)?;
                }
                None => app.sys.remove_file(&paths.sysctl_dropin())?,
            }
            // The DHCP server's configuration; its first boot starts dnsmasq with it.
            match &desired.dhcp {
                Some(data) => app.sys.write_file(&paths.dhcp_conf(), data, 0o644)?,
                None => app.sys.remove_file(&paths.dhcp_conf())?,
            }
            // The commit point, as in an apply: the generation counts once it is current.
            app.store.switch(app.sys, n, serial)
        };
        write(self).map_err(ApplyError::Unchanged)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::tests::{v1, Fixture, FULL};
    use crate::system::fake::FakeSystem;
    use std::path::Path;

    #[test]
    fn an_installed_generation_boots_to_what_an_apply_makes() {
        let fx = Fixture::new();
        let b = fx.bundle(&v1(), 1);
        let applied = {
            let mut sys = FakeSystem::new();
            fx.applier(&mut sys).apply_bundle(&b, FULL).unwrap();
            sys.view()
        };
        let mut sys = FakeSystem::new();
        assert_eq!(fx.applier(&mut sys).install_offline(&b, 7).unwrap(), 1);
        // Nothing live: no OVS row, no rule, no sysctl value.
        let installed = sys.view();
        assert!(installed.owned.bridges.is_empty());
        assert_eq!(installed.chains, bundle::Chains::from_save(""));
        assert_eq!(
            installed.files[Path::new("/proc/sys/net/ipv4/ip_forward")],
            "0\n"
        );
        assert_eq!(
            installed.files[Path::new("/etc/network/interfaces")],
            applied.files[Path::new("/etc/network/interfaces")]
        );
        assert_eq!(
            installed.files[Path::new("/var/lib/ovs-bundle/current")],
            "1\n"
        );
        // First boot: the same code path as any boot.
        assert_eq!(
            crate::boot::boot(&mut fx.applier(&mut sys), false),
            bundle::Exit::Ok
        );
        let booted = sys.view();
        assert_eq!(
            (&booted.owned, &booted.chains, &booted.root),
            (&applied.owned, &applied.chains, &applied.root)
        );
        assert_eq!(
            booted.files[Path::new("/proc/sys/net/ipv4/ip_forward")],
            "1\n"
        );
        // The same bundle again is no new generation; an older serial is refused.
        let e = fx
            .applier(&mut sys)
            .install_offline(&fx.bundle(&v1(), 0), 7)
            .unwrap_err();
        assert_eq!(e.exit(), bundle::Exit::Refused);
    }
}
