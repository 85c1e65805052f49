#!/bin/sh
# PID 1 of the test guest (busybox, inside the initramfs). It loads the modules the run
# needs, mounts the host's root filesystem read-only over virtio-9p and runs the guest agent
# in it, so the guest uses the very Node runtime, addon and repository the host just built,
# without a root filesystem image to keep in sync.
#
# Its settings come from the kernel command line (multihead.*=...), written by the harness.
# Everything printed here lands in the console log the harness keeps for failure reports.
PATH=/bin
export PATH

say() { echo "multihead-init: $*"; }
die() {
  say "FATAL: $*"
  # No shell to fall back to: the harness reads the console log, so stop the VM at once
  # instead of leaving it to hit the boot timeout.
  poweroff -f
  sleep 60
}

mount -t proc proc /proc || die "cannot mount /proc"
mount -t sysfs sysfs /sys || die "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || die "cannot mount /dev"

gpu=virtio
node=
agent=
scratch=
repo=
# shellcheck disable=SC2013 # the command line is a list of words
for arg in $(cat /proc/cmdline); do
  case "$arg" in
  multihead.gpu=*) gpu=${arg#*=} ;;
  multihead.node=*) node=${arg#*=} ;;
  multihead.agent=*) agent=${arg#*=} ;;
  multihead.scratch=*) scratch=${arg#*=} ;;
  multihead.repo=*) repo=${arg#*=} ;;
  esac
done
{ [ -n "$node" ] && [ -n "$agent" ] && [ -n "$scratch" ] && [ -n "$repo" ]; } || die "multihead.node/agent/scratch/repo missing from the kernel command line"

# The lists are in dependency order (computed on the host from modules.dep), so plain
# insmod is enough and busybox's modprobe quirks do not matter.
load_list() {
  [ -f "/modules/$1.list" ] || die "no module list $1"
  while read -r mod args; do
    [ -n "$mod" ] || continue
    # shellcheck disable=SC2086 # args holds module parameters, one word each
    insmod "/modules/$mod" $args || die "insmod $mod failed"
  done <"/modules/$1.list"
}
load_list common
case "$gpu" in
virtio) load_list virtio ;;
vkms)
  load_list vkms
  # vivid's emulated HDMI CEC adapters (display-power-cec): a TV and two sources on one bus.
  load_list vivid
  ;;
none) ;;
*) die "unknown multihead.gpu=$gpu" ;;
esac
say "modules loaded for gpu=$gpu"

mkdir -p /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /newroot ||
  die "cannot mount the host root over 9p (mount_tag hostroot)"
# The repository must stay visible at its own path even when it lies under /tmp or /run
# (CI's clean clones), which the fresh tmpfs mounts below would hide: hold it aside first.
mkdir -p /repo
mount --bind "/newroot$repo" /repo || die "repository $repo not found on the host root"
# The host's own /tmp, /run, /dev, /proc and /sys must not leak into the guest: give it
# its own, writable where programs expect to write.
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || die "cannot mount /tmp"
mount -t tmpfs -o mode=755 tmpfs /newroot/run || die "cannot mount /run"
mkdir -p "/newroot$repo" 2>/dev/null
mount --move /repo "/newroot$repo" || die "cannot put the repository back at $repo"
mount --move /dev /newroot/dev || die "cannot move /dev"
mount --move /proc /newroot/proc || die "cannot move /proc"
mount --move /sys /newroot/sys || die "cannot move /sys"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
mount -t configfs configfs /newroot/sys/kernel/config 2>/dev/null
mount -t debugfs debugfs /newroot/sys/kernel/debug 2>/dev/null
# The scratch share appears at the same absolute path as on the host; when that path lies
# under /tmp, the directory has to be made in the guest's fresh tmpfs first.
mkdir -p "/newroot$scratch" 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=512000 scratch "/newroot$scratch" ||
  die "cannot mount the scratch share at $scratch"

port=
for p in /newroot/sys/class/virtio-ports/*; do
  [ "$(cat "$p/name" 2>/dev/null)" = agent ] && port=/dev/${p##*/}
done
[ -n "$port" ] || die "no virtio-serial port named agent"

say "starting agent on $port"
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \
  "$node" "$agent" "$port"
say "agent exited with status $?"
poweroff -f
sleep 60
