#!/bin/sh
# The whole test suite (npm test, the README's test command, CI). The suites run one after
# another, fastest first, and stop at the first that fails. Meanwhile the appliance images
# that test:image boots (three builds, ~10 minutes of a quiet 2-core machine) are built in the
# background at the lowest CPU priority, into the cache test:image reads: the other suites
# spend much of their time waiting on brokers, browsers and emulated kernels. The background
# build stops before test:vm, whose emulated guests count vblanks and must not share the CPUs.
set -eu
cd "$(dirname "$0")/.."
mkdir -p test-results
# dist/, the JavaScript the supervisor runs (scripts/build.sh), once before any suite starts one.
scripts/build.sh
prebuild_log=test-results/image-prebuild.log
# Its own process group, so that a failing suite stops the build and everything it started.
setsid nice -n 19 node test/image/run.ts --build-only >"$prebuild_log" 2>&1 &
prebuild=$!
prebuild_stop() {
  kill -TERM "-$prebuild" 2>/dev/null || true
  wait "$prebuild" 2>/dev/null || true
}
trap prebuild_stop EXIT INT TERM

npm run lint
cargo test --release --quiet
ava
npm run test:hostile
# The builds finish (or fail: test:image then builds again and says why) before the VM suite.
if wait "$prebuild"; then
  echo "# image builds for test:image done in the background: $(grep -c '^PASS' "$prebuild_log") passed"
else
  echo "# image builds in the background failed (test:image builds again); its last lines:"
  tail -n 15 "$prebuild_log"
fi
trap - EXIT INT TERM
npm run test:vm
npm run test:image
