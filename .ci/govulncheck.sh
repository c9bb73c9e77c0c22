#!/usr/bin/env bash
# govulncheck over the whole module, against a real Go vulnerability database.
#
# It FAILS on any vulnerability in code the relay calls (symbol level). It
# PRINTS, without failing, vulnerabilities in packages we import without
# calling the vulnerable functions, and in modules we only require; for those
# it says which of the entry's packages `go list -deps ./...` puts in our build.
#
# The database, in this order:
#   GOVULNDB            if set: a URL (https://..., file:///dir) or a directory;
#   https://vuln.go.dev when it answers;
#   ../shared/vulndb    beside the checkout (the offline copy; see its README).
# A missing, empty or truncated database is an error, never a clean result: a
# file database must have an index listing thousands of entries that all exist
# under ID/, and every scan must get entries for the standard library back.
#
# govulncheck comes from the Go module proxy and is installed into
# $GOVULNCHECK_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/oauthrelay-ci), not
# into the repository. .ci/govulncheck_test.sh is this script's own test.
#
# GOVULNCHECK_SKIP=1 skips the check, saying so; it is an explicit opt-out for
# machines with no database at all, never the default, and CI must not set it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ "${GOVULNCHECK_SKIP:-0}" = 1 ]; then
  echo "govulncheck SKIPPED because GOVULNCHECK_SKIP=1: this is NOT a pass" >&2
  exit 0
fi
die() { echo "govulncheck FAILED: $*" >&2; exit 1; }

version=v1.9.0
cache="${GOVULNCHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/oauthrelay-ci}"
bin="$cache/govulncheck-$version/govulncheck"
if ! go version -m "$bin" 2>/dev/null | grep -q "golang.org/x/vuln[[:space:]]*$version"; then
  echo "== installing govulncheck $version from the module proxy into $cache"
  GOBIN="$(dirname "$bin")" go install "golang.org/x/vuln/cmd/govulncheck@$version" ||
    die "govulncheck $version could not be installed from the module proxy"
fi
helper() { go run "$root/.ci/vulncheck/main.go" "$@"; }

# checkdir DIR: a usable database directory, as the file:// URL govulncheck takes.
checkdir() {
  local dir
  dir=$(cd "$1" 2>/dev/null && pwd) || die "no vulnerability database at $1"
  helper checkdb "$dir" >&2 || die "$1 is not a usable vulnerability database; refusing to call a scan against it clean"
  echo "file://$dir"
}
if [ -n "${GOVULNDB:-}" ]; then
  case "$GOVULNDB" in
    file://*) db=$(checkdir "${GOVULNDB#file://}") ;;
    http://* | https://*)
      helper probe "$GOVULNDB" || die "GOVULNDB=$GOVULNDB does not answer"
      db=$GOVULNDB ;;
    *) db=$(checkdir "$GOVULNDB") ;;
  esac
elif helper probe https://vuln.go.dev 2>/dev/null; then
  db=https://vuln.go.dev
else
  echo "https://vuln.go.dev does not answer; using the offline copy ../shared/vulndb"
  [ -d ../shared/vulndb ] || die "https://vuln.go.dev does not answer and there is no ../shared/vulndb beside the checkout ($root/../shared/vulndb); set GOVULNDB to a copy of the database"
  db=$(checkdir ../shared/vulndb)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go list -deps ./... >"$tmp/deps" || die "go list -deps ./... failed"
echo "== govulncheck $version -db $db ./..."
rc=0
"$bin" -db "$db" -format json ./... >"$tmp/scan.json" 2>"$tmp/scan.err" || rc=$?
if [ $rc -ne 0 ]; then
  cat "$tmp/scan.err" >&2
  die "govulncheck did not complete (exit $rc)"
fi
# govulncheck's own report: call stacks, and the package and module results.
"$bin" -mode convert -show traces,verbose <"$tmp/scan.json" || true
echo "== verdict"
helper report "$tmp/scan.json" "$tmp/deps" || die "see the verdict above"
