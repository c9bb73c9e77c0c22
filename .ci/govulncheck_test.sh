#!/usr/bin/env bash
# The test of .ci/govulncheck.sh itself: it must fail when our code calls a
# vulnerable function, pass against the real database, and refuse an empty or
# truncated database instead of reporting it clean. One scan per case.
#
# Needs the offline database ../shared/vulndb beside the checkout (or
# GOVULNCHECK_TEST_DB pointing at a copy); the script's own GOVULNDB is ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
real="${GOVULNCHECK_TEST_DB:-../shared/vulndb}"
[ -f "$real/index/modules.json" ] || [ -f "$real/index/modules.json.gz" ] ||
  { echo "govulncheck_test FAILED: no vulnerability database at $real" >&2; exit 1; }
real=$(cd "$real" && pwd)
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
unset GOVULNCHECK_SKIP
failed=0

# run NAME WANT_EXIT DB PATTERN...: run the script against DB; its exit status
# must be WANT_EXIT (0 or nonzero) and its output must match every PATTERN.
run() {
  local name=$1 want=$2 db=$3 rc=0
  shift 3
  echo "-- $name"; SECONDS=0
  GOVULNDB=$db ./.ci/govulncheck.sh >"$tmp/out" 2>&1 || rc=$?
  local ok=1
  if [ "$want" = 0 ] && [ $rc -ne 0 ]; then ok=0; fi
  if [ "$want" != 0 ] && [ $rc -eq 0 ]; then ok=0; fi
  for p in "$@"; do
    grep -Eq -- "$p" "$tmp/out" || { echo "   output lacks /$p/"; ok=0; }
  done
  if [ $ok = 1 ]; then
    echo "   ok (exit $rc, ${SECONDS}s)"
  else
    echo "   FAIL (exit $rc, want $([ "$want" = 0 ] && echo 0 || echo nonzero)); its output:"
    sed 's/^/   | /' "$tmp/out"
    failed=1
  fi
}

# An empty directory, and an index listing almost nothing: refused before any scan.
mkdir -p "$tmp/empty" "$tmp/tiny/index" "$tmp/tiny/ID"
run "empty database directory fails" 1 "file://$tmp/empty" "not a usable vulnerability database"
echo '{"modified":"2026-08-21T00:00:00Z"}' >"$tmp/tiny/index/db.json"
echo '[{"path":"stdlib","vulns":[]}]' >"$tmp/tiny/index/modules.json"
echo '[]' >"$tmp/tiny/index/vulns.json"
run "truncated database fails" 1 "$tmp/tiny" "lists 0 entries for 1 modules"

# A copy of the real database plus two fabricated entries for functions the
# relay really calls at the versions go.mod requires: bcrypt's
# CompareHashAndPassword (relay/auth.go) and go-smtp's (*Client).Mail
# (transport/submit/client.go).
next() { # the patch release after a module's required version
  local v
  v=$(go list -m -f '{{.Version}}' "$1")
  v=${v#v}
  echo "${v%.*}.$((${v##*.} + 1))"
}
cp -R "$real" "$tmp/db"
chmod -R u+w "$tmp/db"
go run ./.ci/vulncheck/main.go addentry "$tmp/db" GO-2099-0001 golang.org/x/crypto \
  "$(next golang.org/x/crypto)" golang.org/x/crypto/bcrypt CompareHashAndPassword
go run ./.ci/vulncheck/main.go addentry "$tmp/db" GO-2099-0002 github.com/emersion/go-smtp \
  "$(next github.com/emersion/go-smtp)" github.com/emersion/go-smtp Client.Mail
run "a called vulnerable function fails" 1 "file://$tmp/db" \
  "CALLED +GO-2099-0001" "CALLED +GO-2099-0002" "calls 2 vulnerable function" \
  "bcrypt\.CompareHashAndPassword" "go-smtp\.\(\*?Client\)\.Mail"

# The real database: passes, and prints GO-2026-5932 (x/crypto/openpgp, in a
# module we require but not in our build).
run "the real database passes" 0 "$real" \
  "ok: no vulnerable function is called" "REQUIRED GO-2026-5932" "none of its packages \(golang.org/x/crypto/openpgp[,)]"

if [ $failed != 0 ]; then
  echo "govulncheck_test FAILED" >&2
  exit 1
fi
echo "govulncheck_test: ok"
