# shellcheck shell=bash
# Shared by the deployment checks in .ci/checks/ (sourced by each area's script, never
# run): the work directory, check() and section(), the setup steps an area asks for
# (apt packages, the workspace build and a snapshot of its binaries, the Ansible venv),
# the systemd helpers that several areas use, and the summary. Sourcing it moves to the
# repository's root.
#
# Environment (for every area):
#   CARGO_TARGET_DIR                  where the binaries are built (default: target)
#   JANTAR_VENV                       venv location (default ~/.cache/jantar/ansible-venv)
#   JANTAR_DEPLOY_CHECKS_STATIC=1|0   the static build and the image (image.sh). Default:
#                                     1 in CI (CI=true), else 0
#   JANTAR_CONTRACT_STRICT=1          binary features still missing (sd_notify,
#                                     healthcheck, generate) fail instead of being listed
#   JANTAR_CHECKS_RESULTS=DIR         summary() also writes DIR/AREA: "PASSED FAILED
#                                     SECONDS", then one failed check's name a line
#                                     (.ci/run reads it for its summary)
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
repo=$(pwd)
started=$(date +%s)
# The area's name: its script's name without .sh.
area=$(basename "$0" .sh)

target=${CARGO_TARGET_DIR:-$repo/target}
# Read by image.sh.
# shellcheck disable=SC2034
static=${JANTAR_DEPLOY_CHECKS_STATIC:-$([ "${CI:-}" = true ] && echo 1 || echo 0)}
work=$target/deploy-checks
mkdir -p "$work"
# The snapshot of the binaries that setup_build makes.
bins=$work/bin

failed=()
passed=0

logfile() { echo "$work/log/$(echo "$1" | tr -c 'a-zA-Z0-9\n' '-').log"; }

# check NAME COMMAND...: runs COMMAND (a function or a program) in a subshell with
# errexit on and its output in a log; prints one line, and the log's tail on failure.
# Exit 77 means it cannot run on this machine (no namespaces): printed as skip.
check() {
  local name=$1 log t0 rc
  shift
  log=$(logfile "$name")
  mkdir -p "$work/log"
  t0=$(date +%s)
  set +e
  (set -e; "$@") >"$log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    printf 'ok    %-58s %4ss\n' "$name" "$(($(date +%s) - t0))"
    passed=$((passed + 1))
  elif [ "$rc" -eq 77 ]; then
    printf 'skip  %-58s %4ss\n' "$name" "$(($(date +%s) - t0))"
    sed 's/^/      | /' "$log" | tail -n 3
  else
    printf 'FAIL  %-58s %4ss\n' "$name" "$(($(date +%s) - t0))"
    sed 's/^/      | /' "$log" | tail -n 40
    failed+=("$name")
  fi
}

section() { printf '\n=== %s\n' "$1"; }

# --- setup -------------------------------------------------------------------------

# setup_packages PACKAGE...: installs the Debian packages that are missing.
setup_packages() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# setup_build: builds the workspace (a no-op when it is built already), then a snapshot
# of the binaries in $bins (hard links, so a concurrent rebuild cannot change them
# under the checks).
setup_build() {
  local t0 role
  echo "building the workspace (cargo build --workspace --locked)"
  t0=$(date +%s)
  cargo build --workspace --locked --quiet
  echo "  done in $(($(date +%s) - t0))s"
  rm -rf "$bins"
  mkdir -p "$bins"
  for role in bootstrap relay peer; do
    ln "$target/debug/jantar-$role" "$bins/" 2>/dev/null || cp "$target/debug/jantar-$role" "$bins/"
  done
}

# setup_venv: the pinned Python tools of scripts/ansible-venv (Ansible, ansible-lint,
# hadolint, docker-compose), first on PATH; $venv is its directory.
setup_venv() {
  venv=$(scripts/ansible-venv | tail -n 1)
  export PATH="$venv/bin:$PATH"
}

# tools LINE...: the versions of the tools an area uses, one line each.
tools() {
  local prefix="tools:"
  while [ $# -gt 0 ]; do
    echo "$prefix $1"
    prefix="      "
    shift
  done
}

# --- systemd helpers (systemd.sh, ansible.sh, package.sh) --------------------------

# host_units ROOT: a copy of this host's own units in ROOT (for the targets ours refer
# to): verify sees what a host would.
host_units() {
  mkdir -p "$1/usr/lib/systemd"
  rm -rf "$1/usr/lib/systemd/system"
  cp -a /usr/lib/systemd/system "$1/usr/lib/systemd/"
}

# verify_unit ROOT UNIT: systemd-analyze verify reports unknown keys and bad values as
# warnings with exit 0, so any output is a failure.
verify_unit() {
  local out
  out=$(systemd-analyze verify --root="$1" "$2" 2>&1) || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  echo "$2: verified"
}

# --- summary -----------------------------------------------------------------------

# summary: the area's count, its failed checks, and its exit status (1 if any failed).
summary() {
  local seconds=$(($(date +%s) - started))
  section "summary"
  echo "$passed passed, ${#failed[@]} failed (${seconds}s)"
  if [ -n "${JANTAR_CHECKS_RESULTS:-}" ]; then
    mkdir -p "$JANTAR_CHECKS_RESULTS"
    {
      echo "$passed ${#failed[@]} $seconds"
      if [ "${#failed[@]}" -gt 0 ]; then printf '%s\n' "${failed[@]}"; fi
    } >"$JANTAR_CHECKS_RESULTS/$area"
  fi
  if [ "${#failed[@]}" -gt 0 ]; then
    printf 'failed: %s\n' "${failed[@]}"
    exit 1
  fi
}
