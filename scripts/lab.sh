#!/usr/bin/env bash
# The main job (README): installs what is missing, builds containerlab/leaf-servers.clab.yml in
# network namespaces, runs the agent on leaf1 against a Kubernetes API holding the lab's Nodes
# (a real kube-apiserver + etcd when lab/k8s/build.sh has built them, else the API test server;
# it says which), prints the sessions, routes and the agent's status, then tears everything down.
# Pass --keep to leave the lab running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: the lab builds network namespaces and starts FRR" >&2
  exit 1
fi
bash scripts/setup.sh
exec .venv/bin/python -m lab.agent_lab "$@"
