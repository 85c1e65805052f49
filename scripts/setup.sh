#!/bin/sh
# One-step setup for a fresh Debian 12 (bookworm) or 13 (trixie) machine, run as root:
# installs the system packages multihead needs, installs the npm dependencies (which pin
# Node.js 24 and build the Rust addon from source), then runs the supervisor or the tests.
#
#   scripts/setup.sh run     set up, then run the supervisor on its embedded defaults
#   scripts/setup.sh test    set up, then run lint, type checks, Rust, ava, the hostile suite, the QEMU kernel suite and the image test
#   scripts/setup.sh deps    set up only
set -eu

usage() {
  echo "usage: scripts/setup.sh run|test|deps" >&2
  exit 64
}
[ $# -eq 1 ] || usage
mode=$1
case "$mode" in run | test | deps) ;; *) usage ;; esac

cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*" >&2; }

# shellcheck disable=SC1091
. /etc/os-release
case "${VERSION_CODENAME:-}" in
bookworm) rust_pkgs="rustc-web cargo-web rust-web-clippy rustfmt-web" ;; # bookworm's rustc (1.63) is too old
trixie | forky | sid) rust_pkgs="rustc cargo rust-clippy rustfmt" ;;
*) rust_pkgs="rustc cargo rust-clippy rustfmt"; say "untested distribution ${PRETTY_NAME:-unknown}; trying anyway" ;;
esac

# The Rust addon needs a C toolchain to link; Node.js (any version) only to run npm, which
# then installs the pinned Node 24 into node_modules.
# libgbm-dev: the addon links Mesa's GBM for scanout buffer objects. FFmpeg's libraries
# (Debian's: 5.1 on bookworm, 7.1 on trixie) are bound at build time by bindgen, which
# needs libclang.
pkgs="build-essential pkg-config ca-certificates git libgbm-dev"
pkgs="$pkgs libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libclang-dev clang"
command -v npm >/dev/null 2>&1 || pkgs="$pkgs nodejs npm"
# The real-kernel suite (test/vm): QEMU, and mmdebstrap to fetch a Debian kernel and build
# vkms for it from Debian's archive.
# The guest runs this machine's userland, so Mesa's kms_swrast (libgl1-mesa-dri) lets GBM
# allocate on vkms there.
[ "$mode" = test ] && pkgs="$pkgs qemu-system-x86 iproute2 mmdebstrap cpio xz-utils zstd debian-archive-keyring libgl1-mesa-dri"
# The appliance image (image/build.sh, test/image, test/provision.test.ts): partitions built as
# files, UEFI firmware for QEMU, and a broker the booted image reports to.
[ "$mode" = test ] && pkgs="$pkgs squashfs-tools dosfstools mtools fdisk e2fsprogs ovmf mosquitto mosquitto-clients"
# HDMI-CEC: the VM case display-power-cec runs cec-ctl, cec-follower and v4l2-ctl in the guest
# (which sees this machine's root); the supervisor runs cec-ctl on the box.
[ "$mode" = test ] && pkgs="$pkgs v4l-utils"
# The decode tests make their clips with the ffmpeg command.
[ "$mode" = test ] && pkgs="$pkgs ffmpeg"
# The MQTT tests start their own mosquitto broker on loopback.
[ "$mode" = test ] && pkgs="$pkgs mosquitto"
# The update tests sign artefacts with a throw-away key (gpg) and verify them as the box does (gpgv).
[ "$mode" = test ] && pkgs="$pkgs gnupg"
# The status page test drives Debian's Chromium through playwright-core.
[ "$mode" = test ] && pkgs="$pkgs chromium"
# The clock-step attack steps only the supervisor's wall clock, with libfaketime preloaded.
[ "$mode" = test ] && pkgs="$pkgs faketime"

# Rust 1.85+ (MSRV of the workspace, Debian 13's version) with clippy and rustfmt.
rust_ok() {
  v=$(cargo --version 2>/dev/null | sed -n 's/^cargo 1\.\([0-9]*\)\..*/\1/p')
  [ -n "$v" ] && [ "$v" -ge 85 ] && cargo clippy --version >/dev/null 2>&1 && cargo fmt --version >/dev/null 2>&1
}
rust_ok || pkgs="$pkgs $rust_pkgs"

missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  say "installing system packages:$missing"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "run as root (or install sudo) to install:$missing"; exit 1; }
    sudo=sudo
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  # shellcheck disable=SC2086
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
rust_ok || { say "Rust 1.85+ with clippy and rustfmt is required; found: $(cargo --version 2>&1)"; exit 1; }

say "installing npm dependencies and building the native addon (release)"
# npm ci: exactly the lockfile, which lists every platform's optional packages, so every
# install is the same and the tree stays clean (npm install would rewrite the lockfile).
npm ci --no-audit --no-fund

case "$mode" in
run) exec bin/multihead ;;
test) exec npm test ;;
deps) say "done" ;;
esac
