#!/usr/bin/env bash
# Builds kube-fabric-agent_<version>_<arch>.deb into dist/ (or the folder given) and prints its
# path. Needs the build dependencies of debian/control (scripts/setup.sh installs them) and PyPI:
# the agent's Python dependencies go into the package's private virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist}")
mkdir -p "$out"

# Build from a copy of the files git knows (tracked, or new and not ignored): never .venv or
# caches, and dpkg-buildpackage writes its results beside the copy, not beside the work tree.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard |
  tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$work/src"

log=$out/build-deb.log
(cd "$work/src" && dpkg-buildpackage -us -uc -b) >"$log" 2>&1 || {
  tail -50 "$log" >&2
  echo "build-deb: dpkg-buildpackage failed (end of $log above)" >&2
  exit 1
}
deb=$(find "$work" -maxdepth 1 -name 'kube-fabric-agent_*.deb' -print -quit)
mv "$deb" "$out/"
echo "$out/$(basename "$deb")"
