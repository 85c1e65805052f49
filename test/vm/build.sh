#!/bin/bash
# Builds the artefacts the VM tests boot: a Debian kernel, and an initramfs holding a static
# busybox, guest/init.sh as /init and the kernel modules the guest needs (virtio-gpu, and a
# vkms built out of tree from Debian's own kernel source, since Debian does not ship it).
#
#   test/vm/build.sh          progress on stderr; the LAST line of stdout is the artefact dir
#
# Artefacts: ${MULTIHEAD_VM_CACHE:-<repo>/.cache/vm}/<key>/ where <key> hashes this script
# (which pins every package version) and guest/init.sh. A build happens in a temporary
# directory renamed into place when complete, so an interrupted build is never used, and a
# cached run only hashes two files. Everything comes from Debian's archive through
# mmdebstrap, which keeps its own apt configuration: the machine's /etc/apt is never touched.
#
# Layout of <key>/:
#   vmlinuz          the kernel
#   initrd.img       gzip newc cpio: /init, /bin/busybox (+ applet links), /modules/
#   kernel-release   e.g. 7.3.4+deb13-amd64
#   modules/         copy of the initramfs's /modules: *.ko (uncompressed) and the lists
#                    common.list, virtio.list, vkms.list ("<file.ko> [params]", in load order)
#   vkms.modinfo     modinfo of the vkms.ko built here
#   manifest         the pinned package versions
#
# Host needs: mmdebstrap, cpio, gzip, xz-utils, util-linux (unshare, flock); run as root.
set -euo pipefail

# --- Pins -------------------------------------------------------------------------------
# One kernel for both GPU flavours: Debian's trixie-backports 7.3.4. A 7.x kernel is needed
# for vkms's configfs with connector status (hot-plug from userspace), overlay planes,
# YUV formats and writeback; 7.3.4 is the newest in trixie-backports whose linux-source-7.3
# is in the archive too (vkms has to be built from the exact source of the running kernel).
# Backports keeps superseded ABIs for a while (7.0.4 was still there when 7.3.4 was
# current), and the downloaded .debs are cached, so the pin survives a few kernel updates.
KERNEL_ABI=7.3.4+deb13-amd64
KERNEL_VERSION=7.3.4-1~bpo13+1
KERNEL_SOURCE=linux-source-7.3
# Debian trixie's static busybox (the initramfs's only userland).
BUSYBOX_VERSION=1:1.37.0-6+b9
SUITE=trixie
MIRROR=http://deb.debian.org/debian
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Bump to force a new build chroot (its key only covers the package list below).
CHROOT_REVISION=1

# Modules each list needs, as module:CONFIG_SYMBOL. A module whose symbol is =y in the
# kernel's config is built in and skipped (modules.builtin misses some, udmabuf among them);
# =m adds it and its dependencies from modules.dep; anything else fails the build. In the
# pinned kernel virtio-pci, virtio-console and udmabuf are built in.
COMMON_MODULES="9p:CONFIG_9P_FS 9pnet_virtio:CONFIG_NET_9P_VIRTIO configfs:CONFIG_CONFIGFS_FS \
udmabuf:CONFIG_UDMABUF virtio_console:CONFIG_VIRTIO_CONSOLE virtio_pci:CONFIG_VIRTIO_PCI"
VIRTIO_MODULES="virtio_gpu:CONFIG_DRM_VIRTIO_GPU"
VKMS_MODULES="vkms:out-of-tree"
# vivid's emulated HDMI CEC adapters (CONFIG_VIDEO_VIVID_CEC=y): one HDMI input (the TV's
# side, physical address 0.0.0.0) and two HDMI outputs (sources) on one emulated CEC bus, for
# display-power-cec. Only the video capture and output nodes (node_types 0x101), no error
# injection controls. Loaded in the vkms guest.
VIVID_MODULES="vivid:CONFIG_VIDEO_VIVID"
VIVID_PARAMS="n_devs=1 num_inputs=1 input_types=0x03 num_outputs=1 output_types=0x01 node_types=0x101 no_error_inj=1"
# Parameters for the out-of-tree vkms, applied only where its modinfo lists them.
VKMS_WANTED_PARAMS="enable_overlay=1 enable_writeback=1 enable_cursor=1"

BUSYBOX_APPLETS="sh ash mount umount cat insmod mkdir chroot poweroff reboot sleep ls echo test [ dmesg"

# --- Paths ------------------------------------------------------------------------------
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${MULTIHEAD_VM_CACHE:-$repo/.cache/vm}
init_sh=$here/guest/init.sh

log() { echo "vm-build: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

key=$(cat "${BASH_SOURCE[0]}" "$init_sh" "$here/vkms-lock-nesting.pl" | sha256sum | cut -c1-16)
out=$cache/$key
if [ -f "$out/initrd.img" ]; then
  echo "$out"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root, chroot, mknod)"
for tool in mmdebstrap cpio gzip xz unshare flock chroot sha256sum; do
  command -v "$tool" >/dev/null || die "missing host tool: $tool (apt-get install mmdebstrap cpio gzip xz-utils util-linux)"
done
[ -f "$KEYRING" ] || die "missing $KEYRING (apt-get install debian-archive-keyring)"

mkdir -p "$cache"
exec 9>"$cache/.lock"
log "waiting for the build lock"
flock 9
# Another build may have finished while we waited.
if [ -f "$out/initrd.img" ]; then
  echo "$out"
  exit 0
fi

start=$(date +%s)
since() { echo "$(($(date +%s) - start))s"; }

# --- Stage 1: the build chroot (toolchain, headers, kernel, modules, source) -------------
packages="make kmod xz-utils busybox-static=$BUSYBOX_VERSION \
linux-headers-$KERNEL_ABI=$KERNEL_VERSION linux-binary-$KERNEL_ABI=$KERNEL_VERSION \
linux-modules-$KERNEL_ABI=$KERNEL_VERSION linux-base-$KERNEL_ABI=$KERNEL_VERSION \
$KERNEL_SOURCE=$KERNEL_VERSION"
chroot_key=$(echo "$CHROOT_REVISION $SUITE $MIRROR $packages" | sha256sum | cut -c1-16)
chroot_dir=$cache/chroot-$chroot_key
debs=$cache/debs

if [ ! -f "$chroot_dir/.complete" ]; then
  rm -rf "$chroot_dir" "$chroot_dir.tmp"
  mkdir -p "$debs/partial"
  log "stage 1: mmdebstrap $SUITE build chroot (kernel $KERNEL_VERSION; .debs cached in $debs)"
  # The .deb cache is bind-mounted over the chroot's apt archive, inside a private mount
  # namespace so that no mount outlives mmdebstrap, whatever happens to it.
  # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hooks
  unshare -m --propagation private mmdebstrap --mode=root --variant=minbase \
    --aptopt='Acquire::Languages "none"' \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --include="$(echo "$packages" | tr -s ' ' ',')" \
    --skip=essential/unlink \
    --setup-hook="mkdir -p \"\$1\"/var/cache/apt/archives && mount --bind '$debs' \"\$1\"/var/cache/apt/archives" \
    --customize-hook='umount "$1"/var/cache/apt/archives' \
    --customize-hook="mkdir -p \"\$1\"/build && tar -xJf \"\$1\"/usr/src/$KERNEL_SOURCE.tar.xz -C \"\$1\"/build --strip-components=4 $KERNEL_SOURCE/drivers/gpu/drm/vkms && mv \"\$1\"/build/vkms \"\$1\"/build/vkms-src && rm -f \"\$1\"/usr/src/$KERNEL_SOURCE.tar.xz" \
    "$SUITE" "$chroot_dir.tmp" \
    "deb [signed-by=$KEYRING] $MIRROR $SUITE main" \
    "deb [signed-by=$KEYRING] $MIRROR $SUITE-backports main" \
    2> >(sed -u 's/^/vm-build: mmdebstrap: /' >&2) >&2
  [ -f "$chroot_dir.tmp/build/vkms-src/Makefile" ] || die "vkms source was not extracted"
  touch "$chroot_dir.tmp/.complete"
  mv -T "$chroot_dir.tmp" "$chroot_dir"
  log "stage 1 done ($(since))"
else
  log "stage 1: using cached chroot $chroot_dir"
fi

# --- Stage 2: vkms.ko, module lists, initramfs ---------------------------------------------
tmp=$cache/.tmp-$key-$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "stage 2: building vkms.ko and module lists in the chroot"
cp "$here/vkms-lock-nesting.pl" "$chroot_dir/build/vkms-lock-nesting.pl"
# Runs in the chroot with /proc and /dev mounted in a private mount namespace.
cat >"$chroot_dir/build/stage2.sh" <<EOF
#!/bin/sh
set -eu
abi=$KERNEL_ABI
rm -rf /build/vkms /out
cp -a /build/vkms-src /build/vkms
# Multi-CRTC commits could wedge the guest (interrupts back on under a held vkms lock).
perl /build/vkms-lock-nesting.pl /build/vkms/vkms_crtc.c
make -s -C /usr/src/linux-headers-\$abi M=/build/vkms CONFIG_DRM_VKMS=m \
  CONFIG_DRM_VKMS_KUNIT_TEST= -j\$(nproc) modules >&2
strip --strip-debug /build/vkms/vkms.ko
mkdir -p /usr/lib/modules/\$abi/updates /out/modules
cp /build/vkms/vkms.ko /usr/lib/modules/\$abi/updates/vkms.ko
depmod \$abi
modinfo /build/vkms/vkms.ko >/out/vkms.modinfo
params=
for p in $VKMS_WANTED_PARAMS; do
  modinfo -F parm /build/vkms/vkms.ko | grep -q "^\${p%%=*}:" && params="\$params \$p"
done
: >/out/common
# list NAME MODULES...: write /out/modules/NAME.list in load order, skipping built-ins and,
# for the GPU lists (loaded after common, one or the other), what common already loads.
list() {
  name=\$1
  shift
  : >/out/modules/\$name.list
  : >/out/seen
  [ "\$name" = common ] || cp /out/common /out/seen
  for spec in "\$@"; do
    m=\${spec%%:*}
    symbol=\${spec#*:}
    case "\$symbol" in
    out-of-tree) ;;
    *)
      value=\$(sed -n "s/^\$symbol=//p" /usr/lib/modules/\$abi/config)
      case "\$value" in
      y) echo "vm-build: \$m is built in (\$symbol=y)" >&2; continue ;;
      m) ;;
      *) echo "vm-build: ERROR: \$m: \$symbol is '\$value' in the kernel config" >&2; exit 1 ;;
      esac
      ;;
    esac
    modprobe -S \$abi --show-depends --ignore-install "\$m" >/out/deps
    while read -r kind path rest; do
      [ "\$kind" = insmod ] || continue
      file=\$(basename "\$path")
      file=\${file%.xz}
      file=\${file%.zst}
      file=\${file%.gz}
      grep -qx "\$file" /out/seen && continue
      echo "\$file" >>/out/seen
      case "\$path" in
      *.xz) xz -dc "\$path" >/out/modules/\$file ;;
      *.zst) zstd -qdc "\$path" >/out/modules/\$file ;;
      *.gz) gzip -dc "\$path" >/out/modules/\$file ;;
      *) cp "\$path" /out/modules/\$file ;;
      esac
      args=
      [ "\$file" = vkms.ko ] && args=\$params
      [ "\$file" = vivid.ko ] && args=" $VIVID_PARAMS"
      echo "\$file\$args" >>/out/modules/\$name.list
    done </out/deps
  done
  [ "\$name" = common ] && cp /out/seen /out/common
  return 0
}
list common $COMMON_MODULES
list virtio $VIRTIO_MODULES
list vkms $VKMS_MODULES
list vivid $VIVID_MODULES
rm -f /out/seen /out/common /out/deps
EOF
# shellcheck disable=SC2016 # $1 is expanded by the inner shell
unshare -m --propagation private sh -c '
  set -e
  mount -t proc proc "$1/proc"
  mount --rbind /dev "$1/dev"
  chroot "$1" /bin/sh /build/stage2.sh
' stage2 "$chroot_dir" >&2
for l in common virtio vkms vivid; do
  log "$l.list: $(tr '\n' ' ' <"$chroot_dir/out/modules/$l.list")"
done
grep -q vkms.ko "$chroot_dir/out/modules/vkms.list" || die "vkms.ko missing from vkms.list"
grep -q vivid.ko "$chroot_dir/out/modules/vivid.list" || die "vivid.ko missing from vivid.list"

cp -a "$chroot_dir/out/modules" "$tmp/modules"
cp "$chroot_dir/out/vkms.modinfo" "$tmp/vkms.modinfo"
cp "$chroot_dir/usr/lib/modules/$KERNEL_ABI/vmlinuz" "$tmp/vmlinuz"
echo "$KERNEL_ABI" >"$tmp/kernel-release"
cat >"$tmp/manifest" <<EOF
kernel $KERNEL_ABI $KERNEL_VERSION
source $KERNEL_SOURCE $KERNEL_VERSION
busybox-static $BUSYBOX_VERSION
suite $SUITE
EOF

log "stage 2: packing the initramfs"
root=$tmp/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,newroot,tmp}
cp "$chroot_dir/usr/bin/busybox" "$root/bin/busybox"
for applet in $BUSYBOX_APPLETS; do
  ln -s busybox "$root/bin/$applet"
done
cp -a "$tmp/modules" "$root/modules"
install -m 0755 "$init_sh" "$root/init"
# The kernel opens /dev/console for init before init can mount devtmpfs.
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc --reproducible -R 0:0) |
  gzip -n -6 >"$tmp/initrd.img"
rm -rf "$root"

rm -rf "$out"
mv -T "$tmp" "$out"
trap - EXIT
log "built $out ($(since))"

# Prune (under the lock, so no other build is running): leftovers of interrupted builds,
# other build chroots, and all but the two newest other artefact dirs.
rm -rf "$cache"/.tmp-*
for d in "$cache"/chroot-*; do
  if [ -d "$d" ] && [ "$d" != "$chroot_dir" ]; then rm -rf "$d"; fi
done
# A fresh cache holds only this key: grep then matches nothing and exits 1, which with
# pipefail must not fail a build that has succeeded.
# shellcheck disable=SC2010 # names are 16 hex digits; ls -t gives the age order
{ ls -1t "$cache" | grep -xE '[0-9a-f]{16}' | grep -vx "$key" || true; } | sed 1,2d | while read -r d; do rm -rf "${cache:?}/$d"; done

echo "$out"
