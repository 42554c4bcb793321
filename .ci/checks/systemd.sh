#!/usr/bin/env bash
# Deployment checks, systemd area: the units of systemd/ verify (systemd-analyze verify,
# system units against a scratch root holding the binaries at their ExecStart paths and
# this host's units, the user unit in a scratch user manager), are sandboxed
# (systemd-analyze security, exposure at most 1.5), and start under a real systemd
# (scripts/check-units-under-systemd: PID 1 of fresh namespaces; skipped, exit 77, where
# namespaces cannot be made).
#
# Needs: root for the check under systemd; apt systemd, curl, iproute2 (installed when
# missing); the workspace's debug binaries (built here). Environment: see lib.sh.
#
#   .ci/checks/systemd.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

section "setup"
setup_packages systemd curl iproute2
setup_build
tools "$(systemd-analyze --version | sed -n 1p)"

section "systemd units"

# Scratch roots hold our units, the binaries at their ExecStart paths, and a copy of
# this host's own units (host_units, in lib.sh).
sdroot=$work/systemd-root
rm -rf "$sdroot"
mkdir -p "$sdroot/usr/local/bin" "$sdroot/etc/systemd/system"
host_units "$sdroot"
for role in bootstrap relay peer; do
  ln "$bins/jantar-$role" "$sdroot/usr/local/bin/" 2>/dev/null || cp "$bins/jantar-$role" "$sdroot/usr/local/bin/"
done
cp systemd/jantar-*.service "$sdroot/etc/systemd/system/"

# exposure UNIT MAX: systemd-analyze security --offline, overall exposure <= MAX.
exposure() {
  local out level
  out=$(systemd-analyze security --offline=yes --root="$sdroot" "$1" 2>&1) || true
  level=$(echo "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
  echo "$out" | grep -E '✗|Overall' || true
  [ -n "$level" ] || { echo "$out"; return 1; }
  echo "exposure $level (maximum $2)"
  awk -v l="$level" -v m="$2" 'BEGIN { exit !(l <= m) }'
}
verify_user_unit() {
  local home=$work/user-home out
  rm -rf "$home"
  mkdir -p "$home/.cargo/bin" "$home/.config/systemd/user" "$work/xdg-runtime"
  chmod 0700 "$work/xdg-runtime"
  ln "$bins/jantar-peer" "$home/.cargo/bin/" 2>/dev/null || cp "$bins/jantar-peer" "$home/.cargo/bin/"
  cp systemd/user/jantar-peer.service "$home/.config/systemd/user/"
  out=$(HOME=$home XDG_RUNTIME_DIR=$work/xdg-runtime systemd-analyze --user verify \
    "$home/.config/systemd/user/jantar-peer.service" 2>&1) || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  HOME=$home XDG_RUNTIME_DIR=$work/xdg-runtime systemd-analyze --user security --offline=yes \
    "$home/.config/systemd/user/jantar-peer.service" 2>&1 | grep Overall
}
for role in bootstrap relay peer; do
  check "systemd-analyze verify jantar-$role.service" verify_unit "$sdroot" "jantar-$role.service"
done
check "systemd-analyze --user verify user/jantar-peer.service" verify_user_unit
for role in bootstrap relay peer; do
  check "systemd-analyze security jantar-$role.service <= 1.5" exposure "jantar-$role.service" 1.5
done

# The units under a real systemd (PID 1 of fresh namespaces; nothing reaches the host).
check "units started by systemd: sandbox, DynamicUser, notify, watchdog" \
  env JANTAR_CHECK_DIR="$work" scripts/check-units-under-systemd "$bins"

summary
