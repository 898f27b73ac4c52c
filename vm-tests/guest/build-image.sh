#!/usr/bin/env bash
# Builds the guest every VM test boots: Debian's cloud kernel (unpacked, not installed), a small
# busybox initramfs that loads the virtio drivers and switches to the root disk, and an ext4 root
# image made by mmdebstrap and mke2fs -d (no loop mounts). Output in $1 (default ../.cache/guest);
# reused while this script and the files beside it are unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../.cache/guest}"
recipe_hash=$(cat "$here"/build-image.sh "$here"/init-tiny "$here"/agent "$here"/initramfs-init | sha256sum | cut -c1-16)
if [[ -f "$out/stamp" && "$(cat "$out/stamp")" == "$recipe_hash" ]]; then
  echo "guest image: cached ($out)"
  exit 0
fi
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sources=/etc/apt/sources.list.d/debian.sources
[[ -f $sources ]] || sources=/etc/apt/sources.list

echo "guest image: kernel"
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
(cd "$work" && apt-get download "$kpkg" >/dev/null 2>&1)
dpkg -x "$work"/linux-image-*.deb "$work/k"
kver=$(ls "$work/k/lib/modules")
cp "$work/k/boot/vmlinuz-$kver" "$out/vmlinuz"

echo "guest image: root filesystem (mmdebstrap)"
pkgs=mount,openvswitch-switch,openvswitch-ipsec,strongswan,libstrongswan-standard-plugins,iproute2,iptables
pkgs+=,iputils-ping,tcpdump,kmod,procps,ifupdown,systemd,systemd-sysv,udev,cloud-init
# OVN for scenario 9 (started by its scripts, as on the tiny guests everything is).
pkgs+=,ovn-central,ovn-host
# apt, as on a stock cloud image: cloud-init installs the applier package with it (scenario 4).
pkgs+=,apt
mmdebstrap --variant=essential --mode=root --include="$pkgs" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  bookworm "$work/root" - < "$sources" > "$work/mmdebstrap.log" 2>&1 || { tail -20 "$work/mmdebstrap.log"; exit 1; }

echo "guest image: kernel modules"
m="$work/root/lib/modules/$kver"
mkdir -p "$m/kernel/drivers"
for d in net crypto arch lib fs; do cp -a "$work/k/lib/modules/$kver/kernel/$d" "$m/kernel/"; done
for d in net virtio block char; do cp -a "$work/k/lib/modules/$kver/kernel/drivers/$d" "$m/kernel/drivers/"; done
cp "$work/k/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$m/"
depmod -b "$work/root" "$kver"

echo "guest image: test init, agent, configuration"
install -m 755 "$here/init-tiny" "$work/root/sbin/ovsb-init"
install -m 755 "$here/agent" "$work/root/usr/local/sbin/ovsb-agent"
echo "ovsb-guest" > "$work/root/etc/hostname"
# strongSwan logs to a file the tests collect, not only to syslog.
cat > "$work/root/etc/strongswan.d/charon-logging.conf" <<'CONF'
charon {
  filelog {
    ovsb {
      path = /var/log/charon.log
      default = 1
      ike = 2
      time_format = %b %e %T
    }
  }
}
CONF
# An agent unit for systemd boots (cloud-init scenario).
cat > "$work/root/etc/systemd/system/ovsb-agent.service" <<'UNIT'
[Unit]
Description=ovs-bundle VM test agent
After=systemd-udevd.service
[Service]
ExecStart=/usr/local/sbin/ovsb-agent
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/ovsb-agent.service "$work/root/etc/systemd/system/multi-user.target.wants/ovsb-agent.service"
# Nothing to wait for in a test VM. OVN runs only where scenario 9 starts it: the systemd
# guest (cloud-init, scenario 4) has no use for it.
rm -f "$work/root/etc/systemd/system/multi-user.target.wants/ssh.service"
rm -f "$work/root/etc/systemd/system/multi-user.target.wants/ovn-"*.service

echo "guest image: initramfs"
ir="$work/initramfs"
mkdir -p "$ir"/{bin,dev,proc,sys,newroot,modules}
cp /bin/busybox "$ir/bin/busybox"
for mod in virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  f=$(find "$work/k/lib/modules/$kver" -name "$mod.ko*" | head -1)
  cp "$f" "$ir/modules/"
done
install -m 755 "$here/initramfs-init" "$ir/init"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.gz"

echo "guest image: ext4 image"
mke2fs -q -t ext4 -d "$work/root" -L root "$out/root.img" 1200M
echo "$recipe_hash" > "$out/stamp"
echo "guest image: done ($out)"
