#!/usr/bin/env bash
# Deployment checks, binary contract area: what the units, the image and the packages
# rely on from the binaries (scripts/check-node-contract: $STATE_DIRECTORY, sd_notify,
# --check exit codes, healthcheck, generate, /metrics). With JANTAR_CONTRACT_STRICT=1
# (as in CI) a feature still missing fails the check instead of being listed.
#
# Needs: python3; apt prometheus (promtool check metrics; installed when missing); the
# workspace's debug binaries (built here). Environment: see lib.sh.
#
#   JANTAR_CONTRACT_STRICT=1 .ci/checks/contract.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

section "setup"
setup_packages prometheus
setup_build
tools "$(python3 --version); $(promtool --version 2>&1 | sed -n 1p)"

section "binary contract (what the units, image and packages rely on)"
check "node contract: STATE_DIRECTORY, sd_notify, healthcheck, generate" \
  python3 scripts/check-node-contract "$bins"
grep -E '^  (MISSING|FAIL)' "$(logfile "node contract: STATE_DIRECTORY, sd_notify, healthcheck, generate")" | sed 's/^/      /' || true

summary
