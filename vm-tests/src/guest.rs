//! One QEMU guest: software-emulated, a copy-on-write overlay of the shared root image (so a
//! guest keeps its disk across reboots while every guest shares one base), NICs on multicast
//! hubs, a payload disk, and the agent on a virtio-serial port that runs commands for us.

use anyhow::{bail, Context, Result};
use base64::Engine;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to boot.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    /// Per NIC: the hub (multicast port) it is plugged into, and `ADDR/LEN` set at boot (if any).
    pub nics: Vec<(u16, Option<String>)>,
    pub systemd: bool,
    /// Extra disks (raw images), attached after the payload.
    pub extra_disks: Vec<PathBuf>,
    /// A last NIC on QEMU's user-mode network, isolated (`restrict=on`: no way to the host or
    /// beyond) but for one `guestfwd` rule: TCP to 10.0.2.100:80 runs this command per
    /// connection, on the connection's stdin/stdout.
    pub http_cmd: Option<String>,
    /// Boot this disk image (raw or qcow2, from `builder image host`) with the firmware
    /// (SeaBIOS, QEMU's default) instead of the test kernel, initramfs and root: no `-kernel`,
    /// no payload disk. The guest's addresses come from the image.
    pub disk: Option<PathBuf>,
    /// Record every frame of the first NIC (QEMU's filter-dump) in `dir/nic0.pcap`.
    pub dump_nic0: bool,
    /// Boot `disk` with UEFI firmware (OVMF, Debian's `ovmf`), with a fresh variable store: no
    /// boot entry, so the firmware takes the disk's fallback path \EFI\BOOT\BOOTX64.EFI.
    pub uefi: bool,
}

/// OVMF from Debian's `ovmf` package: the firmware's code (read only) and its empty variables.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

pub struct Guest {
    pub name: String,
    pub dir: PathBuf,
    child: Child,
    agent: Option<(UnixStream, BufReader<UnixStream>)>,
    next_id: u64,
}

#[derive(Clone)]
pub struct Images {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub root: PathBuf,
}

impl Guest {
    pub fn boot(
        spec: &Spec,
        images: &Images,
        payload: &Path,
        dir: &Path,
        mac_seed: u8,
    ) -> Result<Guest> {
        std::fs::create_dir_all(dir)?;
        let overlay = dir.join("root.qcow2");
        let (backing, backing_fmt) = match &spec.disk {
            Some(d) => (
                d.clone(),
                if d.extension().is_some_and(|x| x == "qcow2") {
                    "qcow2"
                } else {
                    "raw"
                },
            ),
            None => (images.root.clone(), "raw"),
        };
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", backing_fmt, "-b"])
            .arg(&backing)
            .arg(&overlay)
            .output()
            .context("qemu-img (install qemu-utils)")?;
        if !out.status.success() {
            bail!("qemu-img create: {}", String::from_utf8_lossy(&out.stderr));
        }
        let sock = dir.join("agent.sock");
        let _ = std::fs::remove_file(&sock);
        let mut append = format!("console=ttyS0 quiet ovsb.host={}", spec.name);
        if spec.systemd {
            append.push_str(" ovsb.init=systemd net.ifnames=0");
        }
        let mut cmd = Command::new("qemu-system-x86_64");
        let accel = std::env::var("OVSB_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
        cmd.args(["-accel", &accel, "-cpu", "qemu64", "-smp", "1", "-m", "512"])
            .args(["-nographic", "-monitor", "none", "-display", "none"]);
        if spec.uefi {
            let vars = dir.join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars)
                .with_context(|| format!("copying {OVMF_VARS} (install ovmf)"))?;
            cmd.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
        if spec.disk.is_none() {
            cmd.arg("-kernel")
                .arg(&images.kernel)
                .arg("-initrd")
                .arg(&images.initrd);
        }
        cmd.arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", overlay.display()));
        if spec.disk.is_none() {
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                payload.display()
            ));
        }
        for d in &spec.extra_disks {
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                d.display()
            ));
        }
        for (i, (port, addr)) in spec.nics.iter().enumerate() {
            cmd.arg("-netdev")
                .arg(format!(
                    "socket,id=n{i},mcast=239.255.42.1:{port},localaddr=127.0.0.1"
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-net-pci,netdev=n{i},mac=52:54:00:{mac_seed:02x}:00:{i:02x}"
                ));
            if i == 0 && spec.dump_nic0 {
                cmd.arg("-object").arg(format!(
                    "filter-dump,id=dump{i},netdev=n{i},file={}",
                    dir.join("nic0.pcap").display()
                ));
            }
            if let Some(a) = addr {
                append.push_str(&format!(" ovsb.addr=eth{i}/{a}"));
            }
        }
        if let Some(http) = &spec.http_cmd {
            let i = spec.nics.len();
            cmd.arg("-netdev")
                .arg(format!(
                    "user,id=n{i},restrict=on,net=10.0.2.0/24,guestfwd=tcp:10.0.2.100:80-cmd:{http}"
                ))
                .arg("-device")
                .arg(format!(
                    "virtio-net-pci,netdev=n{i},mac=52:54:00:{mac_seed:02x}:00:{i:02x}"
                ));
        }
        if spec.disk.is_none() {
            cmd.arg("-append").arg(&append);
        }
        cmd.arg("-chardev")
            .arg(format!(
                "socket,id=agent,path={},server=on,wait=off",
                sock.display()
            ))
            .args([
                "-device",
                "virtio-serial",
                "-device",
                "virtserialport,chardev=agent,name=agent",
            ])
            .arg("-serial")
            .arg(format!("file:{}", dir.join("console.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(dir.join("qemu.log"))?))
            .stderr(Stdio::from(std::fs::File::create(dir.join("qemu.err"))?));
        let child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (install qemu-system-x86)")?;
        Ok(Guest {
            name: spec.name.clone(),
            dir: dir.to_path_buf(),
            child,
            agent: None,
            next_id: 0,
        })
    }

    /// Waits until the agent answers (the guest has booted).
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{}: qemu exited ({status}) while booting; see {}",
                    self.name,
                    self.dir.display()
                );
            }
            if self.agent.is_none() {
                if let Ok(s) = UnixStream::connect(self.dir.join("agent.sock")) {
                    let r = BufReader::new(s.try_clone()?);
                    self.agent = Some((s, r));
                }
            }
            if self.agent.is_some()
                && self
                    .run_timeout("true", Duration::from_secs(2))
                    .is_ok_and(|(rc, _)| rc == 0)
            {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        bail!(
            "{}: no answer from the guest agent within {:?}; console: {}",
            self.name,
            timeout,
            self.dir.join("console.log").display()
        )
    }

    /// Runs `script` with bash in the guest; returns exit code and combined output.
    pub fn run_timeout(&mut self, script: &str, timeout: Duration) -> Result<(i32, String)> {
        let name = self.name.clone();
        let (w, r) = self
            .agent
            .as_mut()
            .with_context(|| format!("{name}: agent not connected"))?;
        self.next_id += 1;
        let id = self.next_id;
        let b64 = base64::engine::general_purpose::STANDARD.encode(script);
        let secs = timeout.as_secs().max(1);
        writeln!(w, "{id} {secs} {b64}")?;
        w.flush()?;
        let deadline = Instant::now() + timeout + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.agent = None; // the stream may hold a late answer: start afresh
                bail!("{name}: no answer within {timeout:?} to: {script}");
            }
            r.get_ref().set_read_timeout(Some(left))?;
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) => {
                    self.agent = None;
                    bail!("{name}: agent connection closed during: {script}");
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
            let mut parts = line.trim_end().splitn(3, ' ');
            let (Some(rid), Some(rc)) = (parts.next(), parts.next()) else {
                continue;
            };
            if rid != id.to_string() {
                continue; // an answer to an earlier, abandoned command
            }
            let out = base64::engine::general_purpose::STANDARD
                .decode(parts.next().unwrap_or(""))
                .unwrap_or_default();
            return Ok((
                rc.parse().unwrap_or(-1),
                String::from_utf8_lossy(&out).into_owned(),
            ));
        }
    }

    pub fn run(&mut self, script: &str) -> Result<(i32, String)> {
        self.run_timeout(script, Duration::from_secs(60))
    }

    /// Runs `script` and fails unless it exits 0.
    pub fn ok(&mut self, script: &str) -> Result<String> {
        let (rc, out) = self.run(script)?;
        if rc != 0 {
            bail!("{}: `{script}` exited {rc}:\n{out}", self.name);
        }
        Ok(out)
    }

    /// Forgets the agent connection (after the guest reboots).
    pub fn disconnect(&mut self) {
        self.agent = None;
    }

    /// Runs `how` (a reboot command, or a crash) and waits until the guest is back with a new
    /// boot id: answers from the old boot, while it shuts down, do not count.
    pub fn reboot(&mut self, how: &str, timeout: Duration) -> Result<()> {
        let boot_id = |g: &mut Guest| {
            g.run_timeout(
                "cat /proc/sys/kernel/random/boot_id",
                Duration::from_secs(10),
            )
            .map(|(_, o)| o)
        };
        let before = boot_id(self)?;
        let _ = self.run_timeout(how, Duration::from_secs(3));
        let start = Instant::now();
        loop {
            self.disconnect();
            std::thread::sleep(Duration::from_secs(2));
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                bail!(
                    "{}: did not come back from `{how}` within {timeout:?}",
                    self.name
                );
            }
            if self.wait_ready(left).is_ok() && boot_id(self).is_ok_and(|id| id != before) {
                if std::env::var_os("OVSB_VM_TRACE").is_some() {
                    eprintln!(
                        "  {}: back from `{how}` after {:?}",
                        self.name,
                        start.elapsed()
                    );
                }
                return Ok(());
            }
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop();
    }
}
