"""The Debian package: built by scripts/build-deb.sh, checked by lintian, then installed,
used, removed and purged by real dpkg in a throwaway Debian 12 root (tests/deb/scenario.sh).

The root is made once by mmdebstrap (Debian 12 with frr, frr-pythontools, iproute2, systemd
and man-db, nothing more) and kept as a tarball outside the work tree; each run unpacks a fresh
copy. It runs in namespaces of its own: the package's sysctl lands in a network namespace that
ends with the test, and nothing it does reaches this machine's dpkg, /etc or processes. What it
does not prove: that systemd starts the agent (no init runs in the root) and that apt resolves
the Depends from a mirror (dpkg checks them against packages already there).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
ROOT_PACKAGES = ("frr", "frr-pythontools", "iproute2", "systemd", "man-db",
                 # lldpd's own Depends, so that the scenario can install lldpd (fetched into
                 # /root/debs, not installed) after the package and see the trigger work.
                 "adduser", "libbsd0", "libcap2", "libevent-2.1-7", "libreadline8", "libsnmp40",
                 "libxml2", "lsb-base")
LATER_DEBS = ("lldpd",)
CACHE = Path(os.environ.get("KFA_DEB_ROOT_CACHE", "/var/cache/kube-fabric-agent-tests"))
MIRROR = "http://deb.debian.org/debian"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    res = subprocess.run(["bash", str(REPO / "scripts" / "build-deb.sh"), str(out)],
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]
    deb = Path(res.stdout.split()[-1])
    assert deb.name.startswith(f"kube-fabric-agent_{VERSION}_") and deb.suffix == ".deb", deb
    return deb


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_packages_dependencies_are_pinned_and_meet_pyproject() -> None:
    """debian/requirements.lock pins every runtime dependency (and only versions pyproject
    allows): a build installs exactly those, not whatever PyPI has that day."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in (REPO / "debian" / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, pinned = line.partition("==")
            assert sep and pinned, f"not pinned with ==: {line}"
            pins[canonicalize_name(name)] = pinned
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject) is not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} is outside pyproject's {req.specifier}")


def test_changelog_version_is_the_python_version() -> None:
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    assert first.startswith(f"kube-fabric-agent ({VERSION}) "), first


def test_control_fields(deb: Path) -> None:
    depends = {d.split()[0] for d in _field(deb, "Depends").split(", ")}
    assert {"frr", "frr-pythontools", "iproute2"} <= depends
    # The virtualenv links to the interpreter it was built with.
    assert any(re.fullmatch(r"python3\.\d+", d) for d in depends), depends
    assert _field(deb, "Recommends") == "lldpd"


def test_files(deb: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    paths = {line.split()[5].removeprefix(".") for line in listing.splitlines()}
    links = {line.split()[5].removeprefix("."): line.split()[7]
             for line in listing.splitlines() if line.startswith("l")}
    assert links["/usr/bin/fabric-agent"] == "../lib/kube-fabric-agent/bin/fabric-agent"
    assert links["/usr/bin/fabricctl"] == "../lib/kube-fabric-agent/bin/fabricctl"
    doc = "/usr/share/doc/kube-fabric-agent"
    for path in ("/lib/systemd/system/kube-fabric-agent.service",
                 "/usr/lib/sysctl.d/60-kube-fabric-agent.conf",
                 "/usr/share/man/man8/fabric-agent.8.gz", "/usr/share/man/man1/fabricctl.1.gz",
                 "/usr/share/bash-completion/completions/fabricctl",
                 f"{doc}/README.md", f"{doc}/examples/config.yaml", f"{doc}/examples/rbac.yaml",
                 f"{doc}/examples/kube-fabric-agent.rules.yaml"):
        assert path in paths, path
    # No byte code (postinst compiles it), no pip in the agent's virtualenv.
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    assert not [p for p in paths if "/site-packages/pip/" in p]


def _documented_lintian_tags() -> set[str]:
    """The tags README.md lists, with why, under "Lintian: what stays, and why"."""
    text = (REPO / "README.md").read_text()
    section = text.split("#### Lintian: what stays, and why", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^- `([a-z0-9-]+)`", section, flags=re.M))


def test_lintian_has_no_errors_and_only_documented_warnings(deb: Path) -> None:
    lintian = shutil.which("lintian")
    assert lintian, "lintian is installed by scripts/setup.sh"
    res = subprocess.run([lintian, "--tag-display-limit", "0", "--show-overrides", str(deb)],
                         capture_output=True, text=True, timeout=900)
    print(res.stdout)  # the report; pytest shows it with -rP or on failure
    tags = re.findall(r"^([EWO]): kube-fabric-agent[^:]*: (\S+)", res.stdout, flags=re.M)
    errors = sorted({tag for kind, tag in tags if kind == "E"})
    assert not errors, res.stdout
    # Warnings, and errors or warnings overridden in debian/*.lintian-overrides.
    kept = {tag for kind, tag in tags if kind in "WO"}
    assert kept <= _documented_lintian_tags(), res.stdout
    # 1 is lintian itself failing; with --show-overrides an overridden error exits 2.
    assert res.returncode in (0, 2) and "O: kube-fabric-agent" in res.stdout, res.stderr


def _debian12_root() -> Path:
    """The cached tarball of a Debian 12 root with the package's Depends, made if missing."""
    key = hashlib.sha256(" ".join(("bookworm", MIRROR, *ROOT_PACKAGES, "later:", *LATER_DEBS)
                                  ).encode()).hexdigest()
    tarball = CACHE / f"bookworm-{key[:12]}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        fetch = (f'mkdir -p "$1/root/debs" && '
                 f'chroot "$1" sh -c "cd /root/debs && apt-get download -q {" ".join(LATER_DEBS)}"')
        res = subprocess.run(["mmdebstrap", "--quiet", "--variant=apt",
                              f"--include={','.join(ROOT_PACKAGES)}",
                              f"--customize-hook={fetch}", "bookworm", str(partial),
                              MIRROR], capture_output=True, text=True, timeout=1200)
        assert res.returncode == 0, res.stderr[-3000:]
        partial.rename(tarball)
    return tarball


def test_install_use_remove_purge_in_a_debian_12_root(deb: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    try:
        # Without its device nodes (not every container may mknod): bind-mounted below.
        subprocess.run(["tar", "-C", str(root), "--exclude=./dev/*", "-xf",
                        str(_debian12_root())], check=True)
        shutil.copy(deb, root / "tmp" / deb.name)
        shutil.copy(REPO / "tests" / "deb" / "scenario.sh", root / "tmp" / "scenario.sh")
        # Private /dev nodes and /proc for the root, in a mount namespace that ends with it.
        setup = ('for d in null zero full random urandom; do touch "$R/dev/$d"; '
                 'mount --bind "/dev/$d" "$R/dev/$d"; done; '
                 'exec chroot "$R" /bin/bash /tmp/scenario.sh "$0" "$1"')
        res = subprocess.run(
            ["unshare", "--net", "--mount", "--pid", "--fork", f"--mount-proc={root}/proc",
             "sh", "-c", setup, f"/tmp/{deb.name}", VERSION],
            env={"R": str(root), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"},
            capture_output=True, text=True, timeout=600)
        print(res.stdout)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert "ok: dpkg -P: configuration and enablement gone" in res.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
