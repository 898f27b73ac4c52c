#!/usr/bin/env bash
# Runs every test of ovs-bundle: formatting and lints, unit tests, golden fixtures, namespace
# tests against real Open vSwitch and iptables, and (when present) the VM tests.
# Installs what it needs from Debian's packages first, only when missing.
set -euo pipefail
cd "$(dirname "$0")"

# Every tool the tests use, the VM tests' included, so that nothing runs before all are there.
# scripts/ensure-tools decides from the tools, installs in one apt transaction and checks again.
mapfile -t needs < <(grep -hv '^#' scripts/test-needs vm-tests/needs)
scripts/ensure-tools test.sh "${needs[@]}"

echo "test.sh: rustfmt and clippy"
cargo fmt --all -- --check
# The kill hook of the applier (feature test-hooks) is on for the tests; release builds have none.
features=(--features ovs-bundle-applier/test-hooks)
cargo clippy --workspace --all-targets "${features[@]}" --quiet -- -D warnings

# Fuzzing runs from here to the end in the background, at the lowest CPU priority: its build
# (the instrumented dependencies) takes the CPU time the tests below leave idle (the namespace
# and VM tests wait on daemons and timers) instead of adding its minutes to the run. A fixed
# number of executions per target, not a time, so that the work done does not depend on what
# else runs. Its result is checked at the end; it is stopped if the run ends earlier.
echo "test.sh: fuzzing each target, in the background (result at the end)"
fuzz_log=$(mktemp)
# A process group of its own (job control on for this one start), so that the trap below stops
# cargo and the fuzzers as well. Not setsid: a new session is a new scheduling autogroup, in
# which nice counts for nothing against the tests (measured: the fuzz build took half the CPUs).
set -m
FUZZ_RUNS=100000 nice -n 19 fuzz/run 300 </dev/null >"$fuzz_log" 2>&1 &
fuzz_pid=$!
set +m
trap 'kill -- "-$fuzz_pid" 2>/dev/null || true; rm -f "$fuzz_log"' EXIT

echo "test.sh: unit, golden, CLI and namespace tests (every test binary at once)"
scripts/run-tests "${features[@]}"

echo "test.sh: Debian packages (two builds of HEAD, lintian, systemd-analyze)"
packaging/test

if [[ -x vm-tests/run ]]; then
  echo "test.sh: VM tests"
  vm-tests/run
fi
echo "test.sh: waiting for the fuzzing"
if ! wait "$fuzz_pid"; then
  cat "$fuzz_log"
  echo "test.sh: fuzzing failed (above)" >&2
  exit 1
fi
cat "$fuzz_log"
echo "test.sh: all tests passed"
