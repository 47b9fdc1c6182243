#!/bin/bash
# Runs inside a throwaway Debian 12 root, in network, mount and PID namespaces of its own
# (tests/test_deb_package.py): installs, uses, removes and purges the package as an operator
# would, and stops at the first thing that is not as promised. Usage: scenario.sh DEB VERSION
set -euo pipefail
deb=$1 version=$2
pkg=kube-fabric-agent
example=/usr/share/doc/$pkg/examples/config.yaml
wants=/etc/systemd/system/multi-user.target.wants/$pkg.service
sysctl_file=/usr/lib/sysctl.d/60-$pkg.conf
ok() { echo "ok: $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# dpkg, not apt, and no --force-depends: the root holds only real Debian packages, so every
# Depends must be one of them.
dpkg -i "$deb"
ok "dpkg -i: Depends met by Debian 12's frr, frr-pythontools, iproute2"

[ "$(fabric-agent --version)" = "fabric-agent $version" ] || fail "fabric-agent --version"
[ "$(fabricctl --version)" = "fabricctl $version" ] || fail "fabricctl --version"
ok "fabric-agent --version: $(fabric-agent --version)"
fabric-agent check-config --config "$example" || fail "check-config rejects the example"
ok "fabric-agent check-config --config $example"
# Imports grpc from the private virtualenv, finds no agent: exit status 3 (not running).
rc=0
fabricctl status >/dev/null 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "fabricctl status exited $rc, not 3 (agent not running)"
ok "fabricctl status: exit 3, agent not running"

unit=$(dpkg -L $pkg | grep "/systemd/system/$pkg.service$")
# verify also checks that ExecStart's binary exists and that Documentation's man page opens.
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify says: $out"
ok "systemd-analyze verify $unit"
grep -qx "ConditionPathExists=/etc/$pkg/config.yaml" "$unit" || fail "no ConditionPathExists"
[ -L "$wants" ] || fail "unit not enabled"
ok "unit enabled, starts once /etc/$pkg/config.yaml exists"

for v in 4 6; do
  value=$(cat /proc/sys/net/ipv$v/fib_notify_on_flag_change)
  [ "$value" = 2 ] || fail "postinst left net.ipv$v.fib_notify_on_flag_change at $value"
done
ok "postinst applied $sysctl_file (fib_notify_on_flag_change = 2)"
[ -n "$(find /usr/lib/$pkg -name '*.pyc' -print -quit)" ] || fail "postinst compiled nothing"
ok "postinst compiled the virtualenv's byte code"
man -w fabric-agent >/dev/null && man -w fabricctl >/dev/null || fail "man pages"
ok "man fabric-agent, man fabricctl"

# lldpd (only Recommended) is absent: the unit names no group that does not exist. Installed
# later, its trigger gives the unit lldpd's group through a drop-in, which verify accepts.
dropin=/etc/systemd/system/$pkg.service.d/50-lldpd-group.conf
! getent group _lldpd >/dev/null || fail "the root already has lldpd's group"
[ ! -e "$dropin" ] || fail "drop-in written without lldpd's group"
! grep -q "^SupplementaryGroups=.*_lldpd" "$unit" || fail "the unit names _lldpd itself"
ok "without lldpd: no _lldpd group in the unit or a drop-in"
dpkg -i /root/debs/lldpd_*.deb >/dev/null
grep -qx "SupplementaryGroups=_lldpd" "$dropin" || fail "lldpd's trigger wrote no drop-in"
out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify with the drop-in: $out"
[ -z "$out" ] || fail "systemd-analyze verify with the drop-in says: $out"
ok "lldpd installed: its trigger added the drop-in with SupplementaryGroups=_lldpd"

# The operator configures it; remove keeps that, purge deletes it.
install -d /etc/$pkg
cp "$example" /etc/$pkg/config.yaml
echo "# credentials" >/etc/$pkg/kubeconfig

dpkg -r $pkg
for gone in /usr/bin/fabric-agent /usr/bin/fabricctl /usr/lib/$pkg "$unit" "$sysctl_file"; do
  [ ! -e "$gone" ] || fail "dpkg -r left $gone"
done
[ -f /etc/$pkg/config.yaml ] && [ -f /etc/$pkg/kubeconfig ] || fail "dpkg -r deleted config"
dpkg -s $pkg | grep -qx "Status: deinstall ok config-files" || fail "not in config-files state"
ok "dpkg -r: program gone, /usr/lib/$pkg gone (no stray byte code), configuration kept"

dpkg -P $pkg
[ ! -e /etc/$pkg ] || fail "dpkg -P left /etc/$pkg: $(ls -A /etc/$pkg)"
[ ! -e "$wants" ] || fail "dpkg -P left the unit enabled"
! dpkg -s $pkg >/dev/null 2>&1 || fail "still known to dpkg after purge"
[ ! -e "$dropin" ] || fail "dpkg -P left the lldpd drop-in"
ok "dpkg -P: configuration and enablement gone"
