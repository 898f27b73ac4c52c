//! `builder image`: bootable disk images. `image base` builds a fleet release's base (Debian 12
//! by mmdebstrap; GRUB for BIOS by grub-mkimage and grub-bios-setup, and for UEFI by grub-mkimage
//! on an EFI system partition made by mkfs.fat and mtools; one ext4 root made by `mke2fs -d`; an
//! MBR partition table by sfdisk) and keeps its root tree beside the disk;
//! `image host` makes one host's image from it: on an overlay of the base tree, the host's
//! verified bundle installed offline by the base's own applier (`applier --root TREE install`),
//! the host name and the fleet key; the root file system made again with the same UUID and put
//! behind a copy of what precedes it on the base disk (partition table, GRUB's BIOS core and the
//! EFI system partition); written 0600 because
//! it holds the host's PSKs. No partition table, file system or boot loader code of our own:
//! these are the Debian tools' (docs/image.md).
//!
//! Reproducible: every time in the root filesystem is SOURCE_DATE_EPOCH or older (mtimes are
//! clamped in the tree, atimes and ctimes set by debugfs, since `mke2fs -d` copies them from the
//! files it reads), the UUID and directory hash seed are derived from it, and mke2fs's own
//! clock is E2FSPROGS_FAKE_TIME.
//!
//! Over 500 lines: one reproducible pipeline (base, then per-host images) whose steps share
//! the clamped times and the tools' checks; splitting it would scatter that.

use anyhow::{bail, Context, Result};
use bundle::{Exit, TrustedKey, VerifyOptions};
use clap::{Args, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub cmd: ImageCmd,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Build a base image (a fleet release): Debian 12, Open vSwitch with IPsec, strongSwan,
    /// iptables, ifupdown, the ovs-bundle-applier package (give it with --deb), GRUB for BIOS
    /// and for UEFI (one disk boots under both).
    ///
    /// Writes OUT/disk.raw (the bootable base disk), OUT/root/ (its root tree, which
    /// `builder image host` starts from), OUT/base.json and OUT/packages.txt (what is in it).
    /// Needs root (mmdebstrap, a loop device for GRUB's setup), mmdebstrap, e2fsprogs, fdisk,
    /// grub-pc-bin, grub-efi-amd64-bin, dosfstools and mtools. The same packages and
    /// SOURCE_DATE_EPOCH give the same bytes.
    Base(BaseArgs),
    /// Build one host's disk image (or every host's, --all) from a base image.
    ///
    /// The bundle is verified first (signed by --key, for the host): nothing is written
    /// otherwise. The image holds the host's PSKs: it is written 0600.
    Host(HostArgs),
}

#[derive(Debug, Args)]
pub struct BaseArgs {
    /// The directory to write the base to (created; must not hold a base already).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A local Debian package to install (repeatable); one must be ovs-bundle-applier.
    #[arg(long = "deb", value_name = "PATH", required = true)]
    pub debs: Vec<PathBuf>,
    /// Install openssh-server (host keys are made at first boot, never baked into the image).
    #[arg(long)]
    pub with_ssh: bool,
    /// Install cloud-init.
    #[arg(long)]
    pub with_cloud_init: bool,
    /// The apt sources (deb822 or one-line format) mmdebstrap uses [default: this machine's,
    /// /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list].
    #[arg(long, value_name = "FILE")]
    pub apt_sources: Option<PathBuf>,
    /// Keep downloaded packages in DIR and reuse them in later builds.
    #[arg(long, value_name = "DIR")]
    pub apt_cache: Option<PathBuf>,
    /// Disk size in MiB (the root filesystem fills all but the first 32 MiB: the partition
    /// table, GRUB's BIOS core and the EFI system partition).
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub size_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A sparse raw disk image.
    Raw,
    /// QEMU's qcow2 (by qemu-img convert).
    Qcow2,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// A base directory written by `builder image base`.
    #[arg(long, value_name = "DIR")]
    pub base: PathBuf,
    /// The host's bundle (HOST.tgz from `builder build`).
    #[arg(
        long,
        value_name = "BUNDLE",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub bundle: Option<PathBuf>,
    /// Build every host whose bundle is in DIR (the --out of `builder build`): OUT/HOST.FORMAT.
    #[arg(long, value_name = "DIR")]
    pub all: Option<PathBuf>,
    /// The host the bundle must be for [default: the bundle's file name without .tgz].
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub host: Option<String>,
    /// The fleet's public key: the bundle must be signed by it; it becomes the host's trusted key.
    #[arg(long, value_name = "PUB")]
    pub key: PathBuf,
    /// The image file to write (with --all: the directory).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "raw")]
    pub format: Format,
    /// An extra Debian package to install into the image (repeatable; its dependencies must be in
    /// the base already): for an operator's own tools.
    #[arg(long = "deb", value_name = "PATH")]
    pub debs: Vec<PathBuf>,
}

/// What `image base` records about a base, and `image host` needs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BaseInfo {
    pub source_date_epoch: u64,
    pub root_uuid: String,
    pub hash_seed: String,
    pub disk_bytes: u64,
    /// Where the root partition starts: everything before it (MBR, GRUB's BIOS core, the EFI
    /// system partition) is copied as is.
    pub root_offset: u64,
}

/// A refusal at verification: nothing was written. Exits with the applier's code for it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub message: String,
    pub exit: Exit,
}

/// The EFI system partition: from 1 MiB (GRUB's BIOS core sits before it, after the MBR) to the
/// root partition. 31 MiB, which mkfs.fat makes FAT16: GRUB's EFI image is a few hundred KiB.
/// UEFI firmware reads FAT12, FAT16 and FAT32 (the specification prefers FAT32 on fixed disks;
/// OVMF boots this one in the VM tests).
const ESP_OFFSET: u64 = 1 << 20;
const ROOT_OFFSET: u64 = 32 << 20;
const SUITE: &str = "bookworm";
/// What every base has, besides the --deb packages.
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "iproute2",
    "ifupdown",
    "iptables",
    "openvswitch-switch",
    "openvswitch-ipsec",
    "strongswan",
    "libstrongswan-standard-plugins",
    "linux-image-cloud-amd64",
    "initramfs-tools",
    "procps",
    "iputils-ping",
    "less",
    "e2fsprogs",
    // The tree is merged-/usr from the start (mmdebstrap): this satisfies init-system-helpers'
    // "usrmerge | usr-is-merged" without the conversion tool usrmerge, which would pull in perl
    // and its modules (about 30 MB the image does not need; the qcow2 budget is 400 MB).
    "usr-is-merged",
];
/// What Debian 12's usrmerge pulls in and nothing in the base needs otherwise (perl-base, which
/// is essential, stays).
const USRMERGE_ONLY: &[&str] = &[
    "perl",
    "perl-modules-5.36",
    "libperl5.36",
    "libfile-find-rule-perl",
    "libnumber-compare-perl",
    "libtext-glob-perl",
];

pub fn run(args: ImageArgs) -> Result<Exit> {
    match args.cmd {
        ImageCmd::Base(a) => base(&a).map(|_| Exit::Ok),
        ImageCmd::Host(a) => match host_cmd(&a) {
            Ok(()) => Ok(Exit::Ok),
            Err(e) => match e.downcast_ref::<Refused>() {
                Some(r) => {
                    eprintln!("builder: refused: {r}; nothing was written");
                    Ok(r.exit)
                }
                None => Err(e),
            },
        },
    }
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what}: {:?} failed ({}):\n{}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn need_tools(tools: &[(&str, &str)]) -> Result<()> {
    for (tool, pkg) in tools {
        let found = if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        };
        if !found {
            bail!("{tool} is missing: install the Debian package {pkg}");
        }
    }
    Ok(())
}

/// SOURCE_DATE_EPOCH from the environment, or now (printed, to build the same again).
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().with_context(|| {
            format!(
                "SOURCE_DATE_EPOCH={v:?} is not a Unix time in seconds: set it to one, or unset it"
            )
        }),
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            eprintln!("builder: SOURCE_DATE_EPOCH is not set: using {now} (set SOURCE_DATE_EPOCH={now} to build the same bytes again)");
            Ok(now)
        }
    }
}

/// A UUID derived from `label` and the epoch: the same base inputs give the same identifiers.
fn derived_uuid(label: &str, epoch: u64) -> String {
    let h = Sha256::digest(format!("ovs-bundle image {label} {epoch}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

fn deb_package(deb: &Path) -> Result<String> {
    Ok(run_cmd(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .arg("Package"),
        &format!("reading the package name of {}", deb.display()),
    )?
    .trim()
    .to_string())
}

/// `image base`.
pub fn base(a: &BaseArgs) -> Result<BaseInfo> {
    need_tools(&[
        ("mmdebstrap", "mmdebstrap"),
        ("mke2fs", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("sfdisk", "fdisk"),
        ("losetup", "mount"),
        ("grub-mkimage", "grub-common"),
        ("/usr/lib/grub/i386-pc/grub-bios-setup", "grub-pc-bin"),
        ("/usr/lib/grub/x86_64-efi/kernel.img", "grub-efi-amd64-bin"),
        ("mkfs.fat", "dosfstools"),
        ("mmd", "mtools"),
        ("mcopy", "mtools"),
        ("dpkg-deb", "dpkg"),
    ])?;
    let mut names = Vec::new();
    for d in &a.debs {
        anyhow::ensure!(d.is_file(), "--deb {}: no such file", d.display());
        names.push(deb_package(d)?);
    }
    if !names.iter().any(|n| n == "ovs-bundle-applier") {
        bail!(
            "no --deb is the ovs-bundle-applier package: give its .deb (packaging/build makes it)"
        );
    }
    if a.size_mib < 1024 {
        bail!(
            "--size-mib {} is too small for the base: give 1024 or more",
            a.size_mib
        );
    }
    let sources = match &a.apt_sources {
        Some(p) => p.clone(),
        None => [
            "/etc/apt/sources.list.d/debian.sources",
            "/etc/apt/sources.list",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("no apt sources on this machine: give --apt-sources FILE (Debian 12 sources)")?,
    };
    if a.out.join("disk.raw").exists() || a.out.join("root").exists() {
        bail!(
            "{} already holds a base: remove it or choose another --out",
            a.out.display()
        );
    }
    let epoch = source_date_epoch()?;
    let info = BaseInfo {
        source_date_epoch: epoch,
        root_uuid: derived_uuid("root", epoch),
        hash_seed: derived_uuid("hash-seed", epoch),
        disk_bytes: a.size_mib << 20,
        root_offset: ROOT_OFFSET,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let out = a.out.canonicalize()?;
    let tree = out.join("root");
    let work = tempfile::Builder::new()
        .prefix(".base-")
        .tempdir_in(&out)
        .with_context(|| format!("creating a temporary directory in {}", out.display()))?;

    // 1. The root tree.
    let mut pkgs: Vec<String> = PACKAGES.iter().map(|s| s.to_string()).collect();
    if a.with_ssh {
        pkgs.push("openssh-server".into());
    }
    if a.with_cloud_init {
        pkgs.push("cloud-init".into());
    }
    let debdir = work.path().join("debs");
    std::fs::create_dir_all(&debdir)?;
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=apt", "--mode=root", "--format=directory"])
        .arg(format!("--include={}", pkgs.join(",")))
        .args([
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        ])
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    if let Some(cache) = &a.apt_cache {
        std::fs::create_dir_all(cache)
            .with_context(|| format!("creating the apt cache {}", cache.display()))?;
        let cache = cache.canonicalize()?;
        cmd.args(["--skip=download/empty", "--skip=essential/unlink"])
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
            .arg(format!(
                "--setup-hook=sync-in {} /var/cache/apt/archives/",
                cache.display()
            ))
            .arg(format!(
                "--customize-hook=sync-out /var/cache/apt/archives {}",
                cache.display()
            ));
    }
    // The local packages: copied in and installed by apt (which resolves what they need), then
    // removed again.
    for (i, d) in a.debs.iter().enumerate() {
        let name = format!("{i:02}-{}.deb", names[i]);
        std::fs::copy(d, debdir.join(&name)).with_context(|| format!("copying {}", d.display()))?;
    }
    cmd.arg("--customize-hook=mkdir -p \"$1\"/tmp/ovsb-debs")
        .arg(format!(
            "--customize-hook=sync-in {} /tmp/ovsb-debs",
            debdir.display()
        ))
        .arg("--customize-hook=chroot \"$1\" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/ovsb-debs/*.deb'")
        .arg("--customize-hook=rm -rf \"$1\"/tmp/ovsb-debs")
        // apt took usrmerge for init-system-helpers' "usrmerge | usr-is-merged" in the first
        // (essential) stage, before usr-is-merged was asked for: with usr-is-merged there now,
        // usrmerge goes again, and so does what only it needed, perl and its modules. That
        // stage installs everything as if asked for by name, so they are marked automatic
        // first; autoremove keeps any of them that something else depends on or recommends
        // (not merely suggests: apt keeps those by default, and something suggests perl).
        .arg(format!(
            "--customize-hook=chroot \"$1\" sh -c 'export DEBIAN_FRONTEND=noninteractive; \
             apt-get purge -y -q usrmerge && apt-mark auto {} >/dev/null && \
             apt-get autoremove -y -q --purge -o APT::AutoRemove::SuggestsImportant=false'",
            USRMERGE_ONLY.join(" ")
        ))
        .arg(format!(
            "--customize-hook=chroot \"$1\" dpkg-query -W -f '${{Package}} ${{Version}}\\n' > {}",
            out.join("packages.txt").display()
        ))
        .arg(SUITE)
        .arg(&tree)
        .arg("-");
    let sources_text = std::fs::read(&sources)
        .with_context(|| format!("reading the apt sources {}", sources.display()))?;
    eprintln!("builder: image base: mmdebstrap ({SUITE})");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting mmdebstrap (install the Debian package mmdebstrap)")?;
    child
        .stdin
        .take()
        .context("mmdebstrap's stdin")?
        .write_all(&sources_text)?;
    let res = child.wait_with_output()?;
    if !res.status.success() {
        let err = String::from_utf8_lossy(&res.stderr);
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        bail!(
            "mmdebstrap failed ({}); its last lines:\n{}",
            res.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    // 2. What makes it boot: fstab, GRUB's configuration, host keys made at first boot.
    configure_tree(&tree, &info, a.with_ssh)?;

    // 3. The disk: partition table (the EFI system partition first, then the root), GRUB for
    //    BIOS, GRUB for UEFI on the ESP; the root file system comes last (assemble).
    let disk = work.path().join("disk.raw");
    let head = work.path().join("head.img");
    {
        let f = std::fs::File::create(&disk)?;
        f.set_len(info.disk_bytes)?;
    }
    // An MBR, not GPT: UEFI firmware boots from an MBR partition of type 0xef as well, and
    // GRUB's BIOS core keeps its usual place in the gap after the MBR.
    let table = format!(
        "label: dos\nlabel-id: 0x{}\nunit: sectors\n\n\
         start={}, size={}, type=ef\nstart={}, type=83, bootable\n",
        &info.root_uuid[..8],
        ESP_OFFSET / 512,
        (info.root_offset - ESP_OFFSET) / 512,
        info.root_offset / 512
    );
    let mut sf = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sfdisk (install fdisk)")?;
    sf.stdin
        .take()
        .context("sfdisk's stdin")?
        .write_all(table.as_bytes())?;
    let o = sf.wait_with_output()?;
    if !o.status.success() {
        bail!("sfdisk: {}", String::from_utf8_lossy(&o.stderr));
    }
    eprintln!("builder: image base: GRUB (BIOS and UEFI)");
    grub_setup(&disk, &tree, &info, work.path())?;
    efi_setup(&disk, &tree, &info, work.path())?;
    clamp_mtimes(&tree, info.source_date_epoch)?;
    {
        let mut bytes = vec![0u8; info.root_offset as usize];
        use std::io::Read;
        std::fs::File::open(&disk)?.read_exact(&mut bytes)?;
        std::fs::write(&head, &bytes)?;
    }
    let final_disk = work.path().join("disk.final");
    assemble(&head, &tree, &final_disk, &info, work.path())?;
    std::fs::set_permissions(&final_disk, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&final_disk, out.join("disk.raw"))?;
    std::fs::write(
        out.join("base.json"),
        serde_json::to_string_pretty(&info)? + "\n",
    )?;
    eprintln!(
        "builder: image base: wrote {} (disk.raw, root/, base.json, packages.txt)",
        out.display()
    );
    Ok(info)
}

fn configure_tree(tree: &Path, info: &BaseInfo, ssh: bool) -> Result<()> {
    let w = |rel: &str, text: &str| -> Result<()> {
        let p = tree.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting the mode of {}", p.display()))
    };
    w(
        "etc/fstab",
        &format!("UUID={} / ext4 errors=remount-ro 0 1\n", info.root_uuid),
    )?;
    // Interfaces are named eth0, eth1... as in the profiles' examples.
    let cmdline = "ro console=tty0 console=ttyS0,115200 net.ifnames=0";
    w(
        "boot/grub/grub.cfg",
        &format!(
            "# Written by builder image base: the root file system has this UUID in every image\n\
             # made from this base. /vmlinuz and /initrd.img follow kernel upgrades.\n\
             # Under UEFI the kernel's console on tty0 needs the firmware's framebuffer set up.\n\
             if [ \"$grub_platform\" = efi ]; then insmod all_video; fi\n\
             serial --unit=0 --speed=115200\n\
             terminal_input console serial\n\
             terminal_output console serial\n\
             set timeout=1\n\
             search --no-floppy --fs-uuid --set=root {uuid}\n\
             menuentry 'Debian GNU/Linux (ovs-bundle)' {{\n\
             \tlinux /vmlinuz root=UUID={uuid} {cmdline}\n\
             \tinitrd /initrd.img\n\
             }}\n",
            uuid = info.root_uuid
        ),
    )?;
    w("etc/hostname", "localhost\n")?;
    // Not the build machine's name servers: DHCP (or resolvconf with the interfaces file's
    // dns-* options) writes the host's own.
    w("etc/resolv.conf", "")?;
    w(
        "etc/hosts",
        "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    )?;
    // Nothing machine-specific in a base: systemd makes the machine id at first boot.
    w("etc/machine-id", "uninitialized\n")?;
    // A first boot must not wait for a person at the console (systemd-firstboot prompts for a
    // locale, time zone and root password there): a server image boots unattended.
    let firstboot = tree.join("etc/systemd/system/systemd-firstboot.service");
    let _ = std::fs::remove_file(&firstboot);
    std::os::unix::fs::symlink("/dev/null", &firstboot)
        .with_context(|| format!("masking {}", firstboot.display()))?;
    let _ = std::fs::remove_file(tree.join("var/lib/dbus/machine-id"));
    let _ = std::fs::remove_file(tree.join("var/lib/systemd/random-seed"));
    let _ = std::fs::remove_file(tree.join("var/cache/ldconfig/aux-cache"));
    if ssh {
        // Every host makes its own host keys at first boot: none is baked into the image.
        for e in std::fs::read_dir(tree.join("etc/ssh"))? {
            let p = e?.path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ssh_host_"))
            {
                std::fs::remove_file(&p)?;
            }
        }
        w(
            "etc/systemd/system/ssh.service.d/ovs-bundle-image.conf",
            "# builder image: host keys are made on the host, at its first boot.\n\
             [Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n",
        )?;
    }
    Ok(())
}

/// What both GRUB platforms need: the platform's modules (and, for BIOS, its boot sector
/// image) copied from GRUB's `lib` directory into the tree's /boot/grub/PLATFORM, where GRUB
/// loads them from at boot; and the early configuration built into its image: find the root file
/// system by UUID, then read /boot/grub there. Returns the module directory and that file.
fn grub_platform_files(
    lib: &Path,
    platform: &str,
    tree: &Path,
    info: &BaseInfo,
    work: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let dir = tree.join("boot/grub").join(platform);
    std::fs::create_dir_all(&dir)?;
    for e in std::fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))? {
        let p = e?.path();
        let keep = p.extension().is_some_and(|x| x == "mod" || x == "lst")
            || p.file_name().is_some_and(|n| n == "boot.img");
        if keep {
            std::fs::copy(&p, dir.join(p.file_name().unwrap_or_default()))?;
        }
    }
    let early = work.join("grub-early.cfg");
    std::fs::write(
        &early,
        format!(
            "search.fs_uuid {} root\nset prefix=($root)/boot/grub\n",
            info.root_uuid
        ),
    )?;
    Ok((dir, early))
}

/// GRUB for BIOS, by GRUB's own tools: its modules and a core image (grub-mkimage) that finds
/// the root file system by UUID go into the tree's /boot/grub; grub-bios-setup writes the boot
/// sector and embeds the core image after it, in the disk's first MiB (before the partition).
///
/// grub-install is not used: it needs the partition as a block device of its own (a loop
/// device's partitions), which containers do not always get. grub-bios-setup, which grub-install
/// runs for this step, takes the disk file and the directory it reads the images from; it wants
/// that directory on a disk it can name, so the images are read from a small scratch file system
/// on a loop device.
fn grub_setup(disk: &Path, tree: &Path, info: &BaseInfo, work: &Path) -> Result<()> {
    let lib = Path::new("/usr/lib/grub/i386-pc");
    let (dir, early) = grub_platform_files(lib, "i386-pc", tree, info, work)?;
    run_cmd(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc", "-p", "/boot/grub", "-d"])
            .arg(lib)
            .arg("-c")
            .arg(&early)
            .arg("-o")
            .arg(dir.join("core.img"))
            .args(["biosdisk", "part_msdos", "ext2", "search_fs_uuid"]),
        "making GRUB's core image (grub-mkimage)",
    )?;
    struct Loop(String);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let scratch = work.join("grub-scratch.img");
    run_cmd(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext2", "-d"])
            .arg(&dir)
            .arg(&scratch)
            .arg("16M"),
        "making GRUB's scratch file system",
    )?;
    let dev = run_cmd(
        Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&scratch),
        "attaching GRUB's scratch file system to a loop device (needs root)",
    )?
    .trim()
    .to_string();
    let lo = Loop(dev);
    let mnt = work.join("grub-mnt");
    std::fs::create_dir_all(&mnt)?;
    run_cmd(
        Command::new("mount").arg(&lo.0).arg(&mnt),
        &format!("mounting {}", lo.0),
    )?;
    let m = Mount(mnt.clone());
    let map = work.join("device.map");
    std::fs::write(&map, format!("(hd0) {}\n(hd1) {}\n", disk.display(), lo.0))?;
    run_cmd(
        Command::new(lib.join("grub-bios-setup"))
            .arg("-d")
            .arg(&mnt)
            .args(["-b", "boot.img", "-c", "core.img", "-s", "-m"])
            .arg(&map)
            .arg(disk),
        "writing GRUB's boot sector and core image (grub-bios-setup)",
    )?;
    drop(m);
    drop(lo);
    Ok(())
}

/// GRUB for UEFI: its modules go into the tree's /boot/grub/x86_64-efi, and an EFI image of it
/// (grub-mkimage, the same early configuration as the BIOS core: find the root by UUID, then
/// read /boot/grub/grub.cfg there) becomes the firmware's fallback boot file,
/// \EFI\BOOT\BOOTX64.EFI, on a FAT file system (mkfs.fat, mtools: no mount) written into the
/// EFI system partition. The fallback path needs no boot entry in the firmware's NVRAM, so the
/// image boots on a machine that has never seen it. Not signed: Secure Boot must be off
/// (docs/image.md). Reproducible: mkfs.fat's --invariant, a volume ID derived from the root UUID,
/// and mtools' times from SOURCE_DATE_EPOCH.
fn efi_setup(disk: &Path, tree: &Path, info: &BaseInfo, work: &Path) -> Result<()> {
    let lib = Path::new("/usr/lib/grub/x86_64-efi");
    let (_, early) = grub_platform_files(lib, "x86_64-efi", tree, info, work)?;
    let efi = work.join("BOOTX64.EFI");
    run_cmd(
        Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", "/boot/grub", "-d"])
            .arg(lib)
            .arg("-c")
            .arg(&early)
            .arg("-o")
            .arg(&efi)
            .args(["part_msdos", "ext2", "search_fs_uuid"]),
        "making GRUB's EFI image (grub-mkimage)",
    )?;
    let epoch = info.source_date_epoch;
    clamp_mtimes(&efi, epoch)?;
    let esp = work.join("esp.img");
    std::fs::File::create(&esp)?.set_len(info.root_offset - ESP_OFFSET)?;
    // mtools turns the epoch into FAT dates in local time: UTC, or the bytes would depend on
    // the build machine's time zone.
    let env = [
        ("SOURCE_DATE_EPOCH", epoch.to_string()),
        ("TZ", "UTC".to_string()),
    ];
    run_cmd(
        Command::new("mkfs.fat")
            .args(["--invariant", "-n", "EFI", "-i", &info.root_uuid[..8]])
            // The sectors before the partition, as its boot sector should say (mkfs.fat on a
            // file cannot know them).
            .args(["-h", &(ESP_OFFSET / 512).to_string()])
            .arg(&esp)
            .envs(env.clone()),
        "making the EFI system partition's file system (mkfs.fat)",
    )?;
    let img = esp.display().to_string();
    run_cmd(
        Command::new("mmd")
            .args(["-i", &img, "::/EFI", "::/EFI/BOOT"])
            .envs(env.clone()),
        "making \\EFI\\BOOT on the EFI system partition (mmd)",
    )?;
    run_cmd(
        Command::new("mcopy")
            .args(["-m", "-i", &img])
            .arg(&efi)
            .arg("::/EFI/BOOT/BOOTX64.EFI")
            .envs(env),
        "copying GRUB's EFI image to the EFI system partition (mcopy)",
    )?;
    let bytes = std::fs::read(&esp)?;
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(disk)?
        .write_all_at(&bytes, ESP_OFFSET)
        .with_context(|| format!("writing the EFI system partition into {}", disk.display()))?;
    Ok(())
}

/// Sets every mtime in `tree` later than `epoch` to `epoch` (symlinks themselves, not targets).
fn clamp_mtimes(tree: &Path, epoch: u64) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::os::unix::fs::MetadataExt;
    let t = TimeSpec::new(epoch as i64, 0);
    let mut stack = vec![tree.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
        if md.mtime() > epoch as i64 || md.mtime_nsec() != 0 {
            let m = if md.mtime() > epoch as i64 {
                t
            } else {
                TimeSpec::new(md.mtime(), 0)
            };
            utimensat(None, &p, &t, &m, UtimensatFlags::NoFollowSymlink)
                .with_context(|| format!("setting the times of {}", p.display()))?;
        }
    }
    Ok(())
}

/// Every path in `tree`, as the root file system names it ("/", "/etc", ...), sorted.
fn all_paths(tree: &Path) -> Result<Vec<String>> {
    let mut out = vec!["/".to_string()];
    let mut stack = vec![(tree.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let r = format!("{rel}/{name}");
            if e.file_type()?.is_dir() {
                stack.push((e.path(), r.clone()));
            }
            out.push(r);
        }
    }
    out.sort();
    Ok(out)
}

/// Makes the root file system from `tree` into `disk` at the root offset.
fn make_root_fs(disk: &Path, tree: &Path, info: &BaseInfo, work: &Path) -> Result<()> {
    let blocks = (info.disk_bytes - info.root_offset) / 4096;
    run_cmd(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "root"])
            .arg("-U")
            .arg(&info.root_uuid)
            .arg("-E")
            .arg(format!(
                "offset={},hash_seed={},nodiscard,lazy_itable_init=0,lazy_journal_init=0",
                info.root_offset, info.hash_seed
            ))
            .arg("-d")
            .arg(tree)
            .arg(disk)
            .arg(blocks.to_string())
            .env("E2FSPROGS_FAKE_TIME", info.source_date_epoch.to_string()),
        "making the root file system (mke2fs -d)",
    )?;
    // mke2fs -d copies each file's atime and ctime, which reading and copying the tree set to
    // now: set them to the epoch, by path, in the new file system.
    let mut script = String::new();
    for p in all_paths(tree)? {
        if p.contains('"') || p.contains('\n') {
            bail!(
                "{}: a path with a quote or newline in the tree; debugfs cannot name it",
                p
            );
        }
        for field in ["atime", "ctime"] {
            script.push_str(&format!(
                "sif \"{p}\" {field} @{}\n",
                info.source_date_epoch
            ));
        }
    }
    let cmds = work.join("debugfs.cmds");
    std::fs::write(&cmds, script)?;
    // debugfs opens a file system at an offset with FILE?offset=N (its io_options).
    run_cmd(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&cmds)
            .arg(format!("{}?offset={}", disk.display(), info.root_offset))
            .env("E2FSPROGS_FAKE_TIME", info.source_date_epoch.to_string()),
        "setting times in the root file system (debugfs)",
    )?;
    Ok(())
}

/// A disk: `head` (partition table and GRUB), then the root file system made from `tree`.
fn assemble(head: &Path, tree: &Path, out: &Path, info: &BaseInfo, work: &Path) -> Result<()> {
    let bytes = std::fs::read(head)?;
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(out)
            .with_context(|| format!("creating {}", out.display()))?;
        f.write_all(&bytes)?;
        f.set_len(info.disk_bytes)?;
    }
    make_root_fs(out, tree, info, work)
}

pub fn read_base(dir: &Path) -> Result<BaseInfo> {
    let p = dir.join("base.json");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "reading {}: is {} a base written by `builder image base`?",
            p.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a base description", p.display()))
}

/// Checks the bundle before anything is written: signed by `key`, for `host`, not expired.
pub fn verify_for(bytes: &[u8], path: &Path, host: &str, key: &TrustedKey) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let opts = VerifyOptions {
        host: Some(host.to_string()),
        now: Some(now),
        ..Default::default()
    };
    bundle::verify_bundle(bytes, std::slice::from_ref(key), &opts).map_err(|e| {
        anyhow::Error::new(Refused {
            message: format!("{}: {e}", path.display()),
            exit: e.exit(),
        })
    })?;
    Ok(())
}

fn host_cmd(a: &HostArgs) -> Result<()> {
    let info = read_base(&a.base)?;
    let key_text = std::fs::read_to_string(&a.key)
        .with_context(|| format!("reading the fleet key {}", a.key.display()))?;
    let key = TrustedKey::parse(&key_text, &a.key.display().to_string())
        .with_context(|| format!("{}: not a minisign public key", a.key.display()))?;
    // Which bundles, for which hosts, to which files.
    let mut jobs: Vec<(PathBuf, String, PathBuf)> = Vec::new();
    if let Some(dir) = &a.all {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading the bundle directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
            .collect();
        entries.sort();
        if entries.is_empty() {
            bail!(
                "{}: no HOST.tgz bundle in it (give builder build's --out)",
                dir.display()
            );
        }
        for b in entries {
            let host = stem(&b)?;
            let out = a.out.join(format!("{host}.{}", a.format.ext()));
            jobs.push((b, host, out));
        }
    } else {
        let b = a.bundle.clone().context("give --bundle or --all")?;
        let host = match &a.host {
            Some(h) => h.clone(),
            None => stem(&b)?,
        };
        jobs.push((b, host, a.out.clone()));
    }
    // Every bundle is verified before anything is written.
    let mut verified = Vec::new();
    for (b, host, out) in jobs {
        let bytes = std::fs::read(&b).with_context(|| format!("reading bundle {}", b.display()))?;
        verify_for(&bytes, &b, &host, &key)?;
        verified.push((b, host, out));
    }
    if a.all.is_some() {
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    }
    for (b, host, out) in verified {
        let started = std::time::Instant::now();
        host_image(&a.base, &info, &b, &host, &a.key, &out, a.format, &a.debs)?;
        eprintln!(
            "builder: image host: wrote {} for {host} ({:.1} s); mode 0600: it holds {host}'s PSKs, keep it as secret as they are",
            out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn stem(b: &Path) -> Result<String> {
    b.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tgz"))
        .map(str::to_string)
        .with_context(|| format!("{}: not HOST.tgz; give --host NAME", b.display()))
}

/// One host's image from a verified bundle.
#[allow(clippy::too_many_arguments)]
pub fn host_image(
    base: &Path,
    info: &BaseInfo,
    bundle: &Path,
    host: &str,
    key: &Path,
    out: &Path,
    format: Format,
    debs: &[PathBuf],
) -> Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(".image-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o700))?;
    // The host's tree: an overlay on the base tree (only what this step changes is written), or,
    // where overlayfs cannot be mounted, a copy of it. Either gives the same image bytes.
    let tree = work.path().join("root");
    std::fs::create_dir_all(&tree)?;
    let (upper, scratch) = (work.path().join("upper"), work.path().join("overlay-work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&scratch)?;
    let lower = base
        .join("root")
        .canonicalize()
        .with_context(|| format!("{}: no base tree", base.join("root").display()))?;
    let overlay = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            scratch.display()
        ))
        .arg(&tree)
        .output()
        .is_ok_and(|o| o.status.success());
    /// Unmounts the overlay when the step ends, however it ends (before the work directory goes).
    struct Unmount(Option<PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if let Some(p) = &self.0 {
                let _ = Command::new("umount").arg(p).status();
            }
        }
    }
    let _unmount = Unmount(overlay.then(|| tree.clone()));
    if !overlay {
        std::fs::remove_dir(&tree)?;
        run_cmd(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(&lower)
                .arg(&tree),
            "copying the base tree (needs root to keep owners)",
        )?;
    }
    for (rel, text) in [
        ("etc/hostname", format!("{host}\n")),
        (
            "etc/hosts",
            format!(
                "127.0.0.1 localhost\n127.0.1.1 {host}\n::1 localhost ip6-localhost ip6-loopback\n"
            ),
        ),
    ] {
        let p = tree.join(rel);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
    }
    let trusted = tree.join("etc/ovs-bundle/trusted.d");
    std::fs::create_dir_all(&trusted)?;
    std::fs::copy(key, trusted.join("fleet.pub"))
        .with_context(|| format!("copying {} into the image", key.display()))?;
    std::fs::set_permissions(
        trusted.join("fleet.pub"),
        std::fs::Permissions::from_mode(0o644),
    )?;
    for d in debs {
        run_cmd(
            Command::new("dpkg")
                .arg(format!("--root={}", tree.display()))
                .args(["--log=/dev/null", "--force-unsafe-io", "-i"])
                .arg(d)
                .env("SOURCE_DATE_EPOCH", info.source_date_epoch.to_string()),
            &format!(
                "installing {} into the image (its dependencies must be in the base)",
                d.display()
            ),
        )?;
    }
    // The base's own applier installs the bundle: the code and version the host runs.
    let applier = tree.join("usr/sbin/applier");
    run_cmd(
        Command::new(&applier)
            .arg("--root")
            .arg(&tree)
            .arg("install")
            .arg(bundle)
            .env("SOURCE_DATE_EPOCH", info.source_date_epoch.to_string()),
        &format!(
            "installing {} into the image (applier install)",
            bundle.display()
        ),
    )?;
    // What this step wrote has the time of now: the epoch, like the rest of the tree.
    clamp_mtimes(&tree, info.source_date_epoch)?;
    let head = work.path().join("head.img");
    {
        use std::io::Read;
        let mut bytes = vec![0u8; info.root_offset as usize];
        std::fs::File::open(base.join("disk.raw"))
            .with_context(|| format!("opening {}", base.join("disk.raw").display()))?
            .read_exact(&mut bytes)?;
        std::fs::write(&head, &bytes)?;
    }
    let raw = work.path().join("disk.raw");
    assemble(&head, &tree, &raw, info, work.path())?;
    let result = match format {
        Format::Raw => raw,
        Format::Qcow2 => {
            let q = work.path().join("disk.qcow2");
            run_cmd(
                Command::new("qemu-img")
                    .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                    .arg(&raw)
                    .arg(&q),
                "converting to qcow2 (install qemu-utils)",
            )?;
            q
        }
    };
    std::fs::set_permissions(&result, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&result, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_well_formed() {
        let a = derived_uuid("root", 1_700_000_000);
        assert_eq!(a, derived_uuid("root", 1_700_000_000));
        assert_ne!(a, derived_uuid("root", 1_700_000_001));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
