#!/usr/bin/env bash
# Installs what the lab and the tests need on a fresh Debian 12 machine (run as root):
# Debian packages, then a virtualenv in .venv with the agent and its test dependencies.
# With --k8s (the test command), also the real kube-apiserver, etcd and grpcurl the
# integration tests run against (lab/k8s/build.sh: Go, cached by version outside the tree; a
# cold build takes 10-20 min on 2 cores, nothing once cached). The main job does not wait for
# that build: it uses the binaries when they are there, else the API test server.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(frr frr-pythontools lldpd iproute2 socat procps iputils-ping redis-server openssl)
# Packaging and alert-rule tests: build the .deb (debian/control's Build-Depends), lint it,
# install it into a Debian 12 root (mmdebstrap), test the completion in bash, run promtool
# (only Debian's prometheus package has it). Without recommends: no node exporter.
tools=(debhelper dh-virtualenv python3-venv lintian mmdebstrap bash-completion man-db prometheus)
missing() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}
updated=
install() {
  local flags=$1
  shift
  [ $# -gt 0 ] || return 0
  echo "installing Debian packages: $*"
  [ -n "$updated" ] || { apt-get update -qq; updated=1; }
  # shellcheck disable=SC2086 # flags is a list of options
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $flags "$@" >/dev/null
}
mapfile -t todo < <(missing "${packages[@]}")
install "" "${todo[@]}"
mapfile -t todo < <(missing "${tools[@]}")
install --no-install-recommends "${todo[@]}"
# The packaged FRR and lldpd services are not used: the lab starts its own instances per
# namespace; nor is Prometheus (only promtool is). Stop them if the package scripts started
# any, so they hold no sockets.
for svc in frr lldpd redis-server prometheus; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/pip install -q -e '.[test]'

if [ "${1:-}" = "--k8s" ]; then
  command -v go >/dev/null || { echo "Go is needed to build kube-apiserver and etcd" >&2; exit 1; }
  bash lab/k8s/build.sh
fi
