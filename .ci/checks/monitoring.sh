#!/usr/bin/env bash
# Deployment checks, monitoring area: the alert rules (promtool check rules, and
# promtool test rules: each alert fires, and does not fire, where expected), both scrape
# configs (promtool check config, each beside its rule file as deployed), and
# scripts/check-metric-names (the dashboard is JSON; every metric and label named in the
# alerts, the dashboard and the docs exists in shared/src; every dashboard query parses).
#
# Needs: apt prometheus, python3-venv (installed when missing); the venv of
# scripts/ansible-venv (made here; check-metric-names needs its PyYAML). Builds nothing.
# Environment: see lib.sh.
#
#   .ci/checks/monitoring.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

section "setup"
setup_packages prometheus python3-venv
setup_venv
tools "$(promtool --version 2>&1 | sed -n 1p)"

section "monitoring"
# Both scrape configs, each beside its rule file (and a token file) as deployed.
prod_prometheus() {
  local d=$work/prometheus
  rm -rf "$d"
  mkdir -p "$d"
  cp deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml "$d/"
  echo "check-token-0123456789" >"$d/jantar-admin-token"
  promtool check config "$d/prometheus.yml"
}
compose_prometheus() {
  local d=$work/compose-prometheus
  rm -rf "$d"
  mkdir -p "$d"
  sed 's|/etc/prometheus/alerts.yml|alerts.yml|' deploy/compose/prometheus.yml >"$d/prometheus.yml"
  cp deploy/prometheus/alerts.yml "$d/"
  promtool check config "$d/prometheus.yml"
}
metric_names() {
  "$venv/bin/python" scripts/check-metric-names --promql-out "$work/dashboard-rules.yml"
  promtool check rules "$work/dashboard-rules.yml"
}
check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts.test.yml" promtool test rules deploy/prometheus/alerts.test.yml
check "promtool check config deploy/prometheus/prometheus.yml" prod_prometheus
check "promtool check config deploy/compose/prometheus.yml" compose_prometheus
check "dashboard and alerts: JSON, metric and label names, PromQL" metric_names

summary
