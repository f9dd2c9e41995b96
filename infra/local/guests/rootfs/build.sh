#!/bin/bash
# Builds the guests' shared root filesystem: Debian 13 (trixie) minbase standing in for Amazon
# Linux 2023 (bash, python3, curl, unzip, sudo, AWS CLI v2, systemd + networkd), the first-boot
# user data runner from files/, and an ec2-user. Run by `make rootfs` (mk/guest.mk), as root.
#
#   build.sh DEST MIRROR
#
# Builds into DEST.new and renames it to DEST only when complete, so a failed build never leaves
# a half root filesystem behind. MIRROR comes from the host's apt sources (mirror.py).
set -euo pipefail
dest=$1
mirror=$2
here=$(cd "$(dirname "$0")" && pwd)
suite=trixie
include=systemd,systemd-sysv,dbus,python3,curl,ca-certificates,iproute2,procps,sudo,unzip,less
# Installed after debootstrap (a virtual package in --include breaks debootstrap).
extra="awscli"

tmp=$dest.new
rm -rf "$tmp"
mkdir -p "$(dirname "$dest")"
echo "build.sh: debootstrap $suite (minbase) from $mirror into $tmp"
debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" \
    > "$tmp.debootstrap.log" 2>&1 || { tail -30 "$tmp.debootstrap.log"; exit 1; }

# apt inside the new root: a private mount namespace, so /proc and /dev vanish with it.
in_root() {
    unshare --mount --propagation private -- /bin/bash -euc '
        root=$1; shift
        mount -t proc proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount -t sysfs sysfs "$root/sys"
        exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
            DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"' in_root "$tmp" "$@"
}
cp /etc/resolv.conf "$tmp/etc/resolv.conf"  # for apt during the build only
# systemd-networkd has its own package since Debian 13; older suites ship it in systemd.
if in_root apt-cache show systemd-networkd > /dev/null 2>&1; then extra="$extra systemd-networkd"; fi
echo "build.sh: apt-get install $extra"
in_root apt-get install -y --no-install-recommends $extra > "$tmp.apt.log" 2>&1 \
    || { tail -30 "$tmp.apt.log"; exit 1; }
in_root apt-get clean

# The project's files (first-boot user data runner, sudoers), owned by root.
tar -C "$here/files" --owner=0 --group=0 -cf - . | tar -C "$tmp" -xf -
chmod 0440 "$tmp/etc/sudoers.d/90-ec2-user"
in_root useradd --create-home --shell /bin/bash --comment "EC2 Default User" ec2-user
in_root systemctl enable systemd-networkd.service stackdrop-user-data.service
# Nothing to do in a guest without internet or terminals; each costs boot time and memory.
in_root systemctl mask apt-daily.timer apt-daily-upgrade.timer console-getty.service \
    getty@tty1.service e2scrub_all.timer fstrim.timer dpkg-db-backup.timer 2>/dev/null || true

# Per-instance identity comes at first boot: machine id, hostname, resolv.conf (no DNS here).
: > "$tmp/etc/machine-id"
rm -f "$tmp/var/lib/dbus/machine-id" "$tmp/etc/hostname"
: > "$tmp/etc/resolv.conf"
rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin "$tmp"/var/log/*.log \
    "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/*
echo "stackdrop guest rootfs: Debian $suite, built $(date -u +%FT%TZ)" > "$tmp/etc/stackdrop-rootfs"

rm -rf "$dest.old"
if [ -e "$dest" ]; then mv "$dest" "$dest.old"; fi
mv "$tmp" "$dest"
rm -rf "$dest.old" "$tmp.debootstrap.log" "$tmp.apt.log"
echo "build.sh: $dest ready ($(du -sh "$dest" | cut -f1))"
