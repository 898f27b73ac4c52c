#!/usr/bin/env bash
# Runs every test of ovs-bundle: formatting and lints, unit tests, golden fixtures, namespace
# tests against real Open vSwitch and iptables, and (when present) the VM tests.
# Installs what it needs from Debian's packages first, only when missing.
set -euo pipefail
cd "$(dirname "$0")"

need=(openvswitch-switch openvswitch-common iptables ifupdown minisign iproute2 iputils-ping util-linux)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "test.sh: rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "test.sh: unit, golden, CLI and namespace tests"
cargo test --workspace

echo "test.sh: fuzzing each target briefly"
fuzz/run 20

if [[ -x vm-tests/run ]]; then
  echo "test.sh: VM tests"
  vm-tests/run
fi
echo "test.sh: all tests passed"
