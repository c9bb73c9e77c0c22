#!/usr/bin/env bash
# Validates the shipped Prometheus rules: syntax and PromQL with
# `promtool check rules`, and behaviour with the rule unit tests
# (`promtool test rules`: each alert fires on a sample series and stays
# silent on a healthy one). promtool comes with Debian's prometheus package.
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found: install Debian's prometheus package (apt-get install prometheus)" >&2
  exit 1
fi
promtool check rules alerts.yml
promtool test rules alerts_test.yml
