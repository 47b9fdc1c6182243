#!/usr/bin/env bash
# The test command (README): installs everything, lints, then runs unit and integration tests.
# Integration tests need root (network namespaces, FRR); they fail, not skip, without it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: the integration tests build network namespaces and start FRR" >&2
  exit 1
fi
bash scripts/setup.sh --k8s
.venv/bin/ruff check agent lab tests bench
exec .venv/bin/pytest -ra -p no:cacheprovider "$@" tests
