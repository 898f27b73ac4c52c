#!/usr/bin/env bash
# Runs every test of ovs-bundle: formatting and lints, unit tests, golden fixtures, namespace
# tests against real Open vSwitch and iptables, the Debian packages, fuzzing and the VM tests.
# Installs what it needs from Debian's packages first, only when missing.
#
# The machine has two cores and the run must stay under 30 minutes, so work that waits (apt,
# mmdebstrap's downloads, the namespace tests' daemons and timers, the TCG guests) runs beside
# work that computes (the builds), in this order:
#
#   1. the test build, while apt installs what is missing; then formatting;
#   2. in the background: the guest image, and fuzzing and clippy (to the end, at the lowest
#      priority: nothing waits for them);
#   3. the unit, golden, CLI and namespace tests, with the first package build (and its lintian
#      and systemd-analyze checks) beside them;
#   4. the VM tests, on the package just checked (when the tree is committed), with the second
#      package build (reproducibility) beside them at the lowest priority (vm-tests/run builds
#      scenario 11's base image beside the first scenarios the same way);
#   5. the results of what ran in the background.
#
# Each background job's output is printed whole when it is collected. Exit status: 0 when
# everything passed; 1 after the output of what failed.
set -euo pipefail
cd "$(dirname "$0")"

# Background jobs, each in a process group of its own (job control on for the start), so that
# the exit trap stops them with everything they started. Not setsid: a new session is a new
# scheduling autogroup, in which nice counts for nothing against the foreground (measured: the
# fuzz build took half the CPUs).
logs=$(mktemp -d)
declare -A pid_of=()
start() { # NAME NICENESS COMMAND...: runs COMMAND in the background
  local name=$1 niceness=$2
  shift 2
  set -m
  nice -n "$niceness" "$@" </dev/null >"$logs/$name.log" 2>&1 &
  pid_of[$name]=$!
  set +m
}
collect() { # NAME: waits for the job, prints its output; exits on its failure
  local name=$1 rc=0
  wait "${pid_of[$name]}" || rc=$?
  unset "pid_of[$name]"
  cat "$logs/$name.log"
  if ((rc != 0)); then
    echo "test.sh: $name failed (exit $rc, output above)" >&2
    exit 1
  fi
}
stop_jobs() {
  for p in "${pid_of[@]}"; do kill -- "-$p" 2>/dev/null || true; done
  rm -rf "$logs"
}
trap stop_jobs EXIT
trap 'exit 143' TERM INT

# The package the VM tests install is the one packaging/test builds and checks, when the tree is
# committed: what it builds is HEAD. With uncommitted changes, vm-tests/run builds the working
# tree's own. Decided before anything runs (builds write only ignored files, but not only ours).
committed=
[[ -n $(git status --porcelain) ]] || committed=1

# The kill hook of the applier (feature test-hooks) is on for the tests; release builds have none.
features=(--features ovs-bundle-applier/test-hooks)
echo "test.sh: the test build, beside installing the tools the tests need"
start build 0 scripts/run-tests --build-only "$logs/artifacts.json" "${features[@]}"
# Every tool the tests use, the VM tests' included, so that nothing runs before all are there.
# scripts/ensure-tools decides from the tools, installs in one apt transaction and checks again.
mapfile -t needs < <(grep -hv '^#' scripts/test-needs vm-tests/needs)
scripts/ensure-tools test.sh "${needs[@]}"

echo "test.sh: rustfmt"
cargo fmt --all -- --check

# The guest image is mmdebstrap: downloads and dpkg, nothing of ours.
start guest-image 10 vm-tests/run --prepare-guest
# A fixed number of executions per target, not a time, so that the work done does not depend on
# what else runs.
start fuzz 19 env FUZZ_RUNS=100000 fuzz/run 300
collect build

debs=$PWD/target/packaging/checked
vm_env=()
if [[ -n $committed ]]; then
  vm_env=(OVSB_DEB_DIR="$debs")
else
  echo "test.sh: uncommitted changes: the VM tests build the working tree's package"
fi
# The package is what the VM tests wait for; clippy, whose result nothing waits for, takes what
# the tests and the VM tests leave idle and is collected at the end. In a target directory of its
# own: cargo locks one for the whole of a command, and the doc tests after the test binaries and
# vm-tests/run's build waited for clippy (3 minutes in one run).
start package 0 packaging/test --first "$debs"
start clippy 19 env CARGO_TARGET_DIR=target/clippy \
  cargo clippy --workspace --all-targets "${features[@]}" --quiet -- -D warnings
echo "test.sh: unit, golden, CLI and namespace tests (every test binary at once); the package beside them"
scripts/run-tests --built "$logs/artifacts.json" "${features[@]}"
echo "test.sh: Debian packages (first build of HEAD, lintian, systemd-analyze)"
collect package
echo "test.sh: the guest image"
collect guest-image

start package-again 19 packaging/test --second "$debs"
echo "test.sh: VM tests"
env "${vm_env[@]}" vm-tests/run
echo "test.sh: clippy"
collect clippy
echo "test.sh: Debian packages (second build of HEAD: the same bytes)"
collect package-again
echo "test.sh: fuzzing"
collect fuzz
echo "test.sh: all tests passed"
