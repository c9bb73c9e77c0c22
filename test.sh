#!/usr/bin/env bash
# Runs every test of oauthrelay: formatting, vet, the Go test suite (unit,
# emulator, crash and interop tests), and the cross-builds CI checks.
# The interop tests drive real clients (swaks, msmtp, Python's smtplib); when
# run as root on Debian this script installs the missing ones first.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v msmtp >/dev/null 2>&1 || need+=(msmtp)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# Postfix as a client of the relay (and smtp-source for bench/run.sh).
[ -x /usr/sbin/postfix ] || command -v postfix >/dev/null 2>&1 || need+=(postfix libsasl2-modules)
# Real proxies for e2e/proxy_test.go: Squid (HTTP CONNECT) and microsocks (SOCKS5).
[ -x /usr/sbin/squid ] || command -v squid >/dev/null 2>&1 || need+=(squid)
command -v microsocks >/dev/null 2>&1 || need+=(microsocks)
# Old devices on TLS 1.0 (e2e/oldtls_test.go: openssl s_client -tls1) and a
# load balancer sending the PROXY protocol (e2e/haproxy_test.go).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
# The application mail clients of e2e/interop: PHPMailer under php-cli,
# Jakarta Mail on the JDK, System.Net.Mail under Mono, Perl Net::SMTP with
# TLS and SASL, curl, s-nail, and Node.js with npm for nodemailer.
command -v php >/dev/null 2>&1 || need+=(php-cli)
[ -f /usr/share/php/libphp-phpmailer/autoload.php ] || need+=(libphp-phpmailer)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
[ -f /usr/share/java/jakarta-mail.jar ] || need+=(libjakarta-mail-java)
command -v mcs >/dev/null 2>&1 || need+=(mono-complete)
perl -MIO::Socket::SSL -e 1 >/dev/null 2>&1 || need+=(libio-socket-ssl-perl)
perl -MAuthen::SASL -e 1 >/dev/null 2>&1 || need+=(libauthen-sasl-perl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v s-nail >/dev/null 2>&1 || need+=(s-nail)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
# promtool (Debian's prometheus) checks and unit-tests deploy/prometheus/alerts.yml.
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# The cluster tests share budgets through a real Redis (internal/cluster, e2e).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${need[*]}"
    apt-get update -qq
    # Postfix only as a program for the tests: no system mail configuration.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: ${need[*]} not installed; their interop tests will be skipped" >&2
  fi
fi

# nodemailer for e2e/interop, at the version pinned in its package-lock.json.
if command -v npm >/dev/null 2>&1 && [ ! -f e2e/interop/node/node_modules/nodemailer/package.json ]; then
  echo "== npm ci (e2e/interop/node: nodemailer)"
  npm ci --prefix e2e/interop/node --no-audit --no-fund --loglevel=error
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

echo "== cross-builds (windows/amd64, linux/arm64)"
GOOS=windows GOARCH=amd64 go build -o /dev/null ./...
GOOS=linux GOARCH=arm64 go build -o /dev/null ./...

echo "== promtool (deploy/prometheus)"
if command -v promtool >/dev/null 2>&1; then
  ./.ci/promtool.sh
else
  echo "warning: promtool not installed; the alert rules were not checked" >&2
fi
echo "== go vet (windows/amd64: certificate store, service)"
# e2e is left out: its tests use Linux system calls.
GOOS=windows GOARCH=amd64 go vet $(go list ./... | grep -v /e2e)
echo "== Kubernetes example (deploy/kubernetes against the k8s.io/api types)"
# Its own module: the relay does not depend on the Kubernetes libraries.
(cd deploy/kubernetes/validate && go run .)

echo "== go test"
# -json through .ci/testsummary: a line per package, the output of every
# failed test, and the count of tests (repeated as this script's last line).
counts=$(mktemp)
trap 'rm -f "$counts"' EXIT
go test -count=1 -timeout 20m -json ./... ./.ci/testsummary | go run ./.ci/testsummary -counts "$counts"

# Each fuzz target runs briefly on top of its committed seed corpus
# (testdata/fuzz). The budgets are execution counts (a few seconds each
# here), not durations: Go 1.26's fuzz coordinator can fail a target with a
# spurious "context deadline exceeded" when a -fuzztime duration runs out
# (go.dev/issue/75804). FUZZTIME overrides every budget; FUZZTIME=0 skips.
if [ "${FUZZTIME:-}" != 0 ]; then
  for target in "FuzzListener ./relay 5000x" "FuzzDecode ./queue 500000x" "FuzzParse ./config 50000x" "FuzzParseAddress ./config 300000x"; do
    read -r name pkg budget <<<"$target"
    budget="${FUZZTIME:-$budget}"
    echo "== fuzz $name ($budget)"
    go test -run='^$' -fuzz="^$name\$" -fuzztime="$budget" -fuzzminimizetime=200x -timeout 5m "$pkg"
  done
fi

# govulncheck against a real database (vuln.go.dev, else ../shared/vulndb;
# GOVULNDB overrides): fails on a vulnerable function our code calls, prints
# findings in modules we only require, and fails when no usable database
# exists. Then the check's own test (a fabricated entry must fail it, an empty
# database must too). GOVULNCHECK_SKIP=1 skips both, saying so; CI never sets it.
echo "== govulncheck"
./.ci/govulncheck.sh
if [ "${GOVULNCHECK_SKIP:-0}" != 1 ]; then
  echo "== govulncheck self-test"
  ./.ci/govulncheck_test.sh
fi

echo "== done"
cat "$counts"
