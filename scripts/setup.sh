#!/usr/bin/env bash
# Installs what the lab and the tests need on a fresh Debian 12 machine (run as root):
# Debian packages, then a virtualenv in .venv with the agent and its test dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(frr frr-pythontools lldpd iproute2 socat procps iputils-ping redis-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The packaged FRR and lldpd services are not used: the lab starts its own instances per
# namespace. Stop them if the package scripts started any, so they hold no sockets.
for svc in frr lldpd redis-server; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -e '.[test]'
