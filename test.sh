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

echo "test.sh: unit, golden, CLI and namespace tests"
cargo test --workspace "${features[@]}"

echo "test.sh: Debian packages (two builds of HEAD, lintian, systemd-analyze)"
packaging/test

echo "test.sh: fuzzing each target briefly"
fuzz/run 10

if [[ -x vm-tests/run ]]; then
  echo "test.sh: VM tests"
  vm-tests/run
fi
echo "test.sh: all tests passed"
