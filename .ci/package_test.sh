#!/usr/bin/env bash
# CI: build the packages (packaging/build.sh), install the .deb on this
# machine, use it, check every file, mode and owner, purge it, and check
# that nothing is left but what Debian keeps on purge (the system user and
# group). Needs root on Debian (dpkg, setpriv); prints each step.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null 2>&1; then
  echo "package test: needs root on Debian (dpkg); skipped" >&2
  exit 0
fi
# build.sh needs zip; the checks below need file.
missing=()
command -v zip >/dev/null 2>&1 || missing+=(zip)
command -v file >/dev/null 2>&1 || missing+=(file)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== package test: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}" >/dev/null
fi
fail=0
bad() { echo "  FAIL: $*"; fail=1; }
ok() { echo "  ok: $*"; }
step() { echo "== package test: $*"; }

# expect PATH MODE OWNER:GROUP
expect() {
  local got
  if ! got=$(stat -c '%a %U:%G' "$1" 2>/dev/null); then
    bad "$1 is missing"
  elif [ "$got" != "$2 $3" ]; then
    bad "$1 is $got, want $2 $3"
  else
    ok "$1 $got"
  fi
}

# Every path named after the package outside this tree, the caches, the
# temporary directories (tests running beside CI use them) and /proc:
# compared before the install and after the purge.
traces() {
  find / -xdev \( -path /proc -o -path /sys -o -path /tmp -o -path /var/tmp -o -path /work -o -path "$PWD" -o -path /root/go -o -path /root/.cache \) -prune \
    -o -name '*oauthrelay*' -print 2>/dev/null | sort
}

step "build (packaging/build.sh)"
./packaging/build.sh
deb=$(ls dist/oauthrelay_*.deb)
for f in dist/oauthrelay-*.rpm dist/oauthrelay_*_windows_amd64.zip; do
  [ -s "$f" ] && ok "built $f" || bad "no $f"
done

if dpkg -s oauthrelay >/dev/null 2>&1; then
  step "purging the oauthrelay package an earlier run left installed"
  dpkg --purge oauthrelay
fi
user_before=$(getent passwd oauthrelay || true)
before=$(mktemp)
after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT
traces >"$before"

step "dpkg -i $deb"
dpkg -i "$deb"

step "oauthrelay version"
oauthrelay version
oauthrelay version | grep -q "^oauthrelay $(git describe --tags --always --dirty)\$" && ok "the version is git describe's" || bad "oauthrelay version does not say $(git describe --tags --always --dirty)"

step "oauthrelay check -config /etc/oauthrelay/config.toml, as the oauthrelay user"
setpriv --reuid=oauthrelay --regid=oauthrelay --init-groups -- oauthrelay check -config /etc/oauthrelay/config.toml && ok "check passes as oauthrelay" || bad "check failed as oauthrelay"

step "files, modes and owners"
expect /usr/bin/oauthrelay 755 root:root
expect /etc/oauthrelay 750 root:oauthrelay
expect /etc/oauthrelay/config.toml 640 root:oauthrelay
expect /etc/oauthrelay/oauthrelay.env 600 root:root
expect /etc/oauthrelay/secrets 700 root:root
expect /var/spool/oauthrelay 700 oauthrelay:oauthrelay
expect /usr/lib/systemd/system/oauthrelay.service 644 root:root
expect /usr/lib/sysusers.d/oauthrelay.conf 644 root:root
expect /usr/lib/tmpfiles.d/oauthrelay.conf 644 root:root
expect /usr/share/man/man8/oauthrelay.8.gz 644 root:root
expect /usr/share/doc/oauthrelay/config.toml.example 644 root:root
cmp -s /etc/oauthrelay/config.toml config.toml.example && ok "config.toml is the example" || bad "config.toml differs from config.toml.example"
file /usr/bin/oauthrelay | grep -q 'statically linked' && ok "the binary is static" || bad "the binary is not static: $(file /usr/bin/oauthrelay)"
grep -q '^ExecStart=/usr/bin/oauthrelay serve -config /etc/oauthrelay/config.toml$' /usr/lib/systemd/system/oauthrelay.service &&
  ! grep -q /usr/local/bin /usr/lib/systemd/system/oauthrelay.service && ok "the unit runs /usr/bin/oauthrelay" || bad "the unit does not run /usr/bin/oauthrelay"
if command -v systemd-analyze >/dev/null 2>&1; then
  if out=$(systemd-analyze verify /usr/lib/systemd/system/oauthrelay.service 2>&1) && [ -z "$out" ]; then
    ok "systemd-analyze verify finds nothing wrong with the unit"
  else
    bad "systemd-analyze verify: $out"
  fi
else
  echo "  skip: no systemd-analyze to verify the unit"
fi
zcat /usr/share/man/man8/oauthrelay.8.gz | grep -q '^\.SH SENDMAIL' && ok "the man page is there (man 8 oauthrelay)" || bad "the man page lacks its SENDMAIL section"
dpkg-query -W -f='${Conffiles}\n' oauthrelay | grep -q '/etc/oauthrelay/config.toml ' && ok "config.toml is a conffile" || bad "config.toml is not a conffile"
entry=$(getent passwd oauthrelay)
case "$entry" in
  oauthrelay:*:*:*:*:/var/spool/oauthrelay:/usr/sbin/nologin) ok "user: $entry" ;;
  *) bad "user oauthrelay is '$entry'" ;;
esac
if ls /etc/systemd/system/*.wants/oauthrelay.service >/dev/null 2>&1; then
  bad "the package enabled the unconfigured relay"
else
  ok "the unit is not enabled"
fi
if [ -d /run/systemd/system ] && systemctl is-active --quiet oauthrelay; then
  bad "the package started the unconfigured relay"
else
  ok "the relay was not started"
fi

step "oauthrelay sendmail as a user outside the oauthrelay group: EX_CONFIG (78) and the fix"
set +e
out=$(printf 'To: a@example.org\n\nhi\n' | setpriv --reuid=nobody --regid=nogroup --clear-groups -- oauthrelay sendmail -t -f noreply@contoso.com 2>&1)
rc=$?
set -e
echo "$out"
[ "$rc" = 78 ] && echo "$out" | grep -q 'usermod -aG oauthrelay' && ok "exit 78 with the fix" || bad "sendmail as nobody: exit $rc"

step "dpkg -i again, as an upgrade: the admin's config.toml stays as it was"
echo "# edited by the admin" >>/etc/oauthrelay/config.toml
dpkg -i --force-confold "$deb"
tail -n 1 /etc/oauthrelay/config.toml | grep -q "edited by the admin" && ok "the edited config.toml is kept" || bad "the upgrade replaced the edited config.toml"
expect /etc/oauthrelay/config.toml 640 root:oauthrelay

step "the README's update-alternatives line, in a scratch --altdir/--admindir (this host's /usr/sbin/sendmail stays)"
ua=$(mktemp -d)
mkdir -p "$ua/alt" "$ua/admin" "$ua/sbin"
update-alternatives --altdir "$ua/alt" --admindir "$ua/admin" --install "$ua/sbin/sendmail" sendmail /usr/bin/oauthrelay 10
"$ua/sbin/sendmail" --help 2>&1 | grep -q '^Usage: oauthrelay sendmail' && ok "the sendmail link runs oauthrelay sendmail" || bad "the sendmail link does not run oauthrelay sendmail"
rm -rf "$ua"

step "dpkg --purge oauthrelay"
dpkg --purge oauthrelay
dpkg -s oauthrelay >/dev/null 2>&1 && bad "the package is still known to dpkg"
traces >"$after"
left=$(comm -13 "$before" "$after")
if [ -n "$left" ]; then
  bad "left after purge: $left"
else
  ok "no file or directory named oauthrelay is left (spool, /etc/oauthrelay, unit, man page, dpkg's records)"
fi
if [ -n "$user_before" ]; then
  ok "user oauthrelay was there before the install and stays"
elif getent passwd oauthrelay >/dev/null; then
  ok "user and group oauthrelay stay, as Debian keeps system users on purge (files elsewhere may still be theirs): $(getent passwd oauthrelay)"
fi

if [ "$fail" != 0 ]; then
  echo "== package test: FAILED"
  exit 1
fi
echo "== package test: passed"
