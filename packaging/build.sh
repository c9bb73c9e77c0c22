#!/usr/bin/env bash
# Builds every package of oauthrelay into dist/:
#   oauthrelay_VERSION_amd64.deb and oauthrelay-VERSION-1.x86_64.rpm (nfpm,
#   from packaging/nfpm.yaml), and oauthrelay_VERSION_windows_amd64.zip
#   (oauthrelay.exe, config.toml.example, install.ps1).
# The version comes from `git describe --tags --always --dirty`. nfpm runs
# through the Go module proxy at a pinned version, so the relay's own
# module does not depend on it. No make needed.
#
# Usage: packaging/build.sh            (GOARCH=arm64 for arm64 packages)
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
describe=$(git describe --tags --always --dirty)
# Package versions must start with a digit: v1.2.3-4-gabc1234 becomes
# 1.2.3+4.gabc1234 and an untagged tree 0~git.abc1234 (sorts before 0.1).
if git describe --tags >/dev/null 2>&1; then
  pkgversion=$(echo "${describe#v}" | sed 's/-/+/; s/-/./g')
else
  pkgversion="0~git.${describe//-/.}"
fi
arch=${GOARCH:-amd64} # nfpm names it x86_64 or aarch64 in the .rpm
echo "== oauthrelay $describe (package version $pkgversion, $arch)"

rm -rf dist
stage=dist/stage # packaging/nfpm.yaml takes the staged files from here
mkdir -p "$stage/windows"
ldflags="-s -w -X main.buildVersion=$describe"

echo "== static binary (linux/$arch, CGO_ENABLED=0)"
CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOFLAGS=-buildvcs=true \
  go build -trimpath -ldflags "$ldflags" -o "$stage/oauthrelay" ./cmd/oauthrelay

# The unit as the package installs it: the binary in /usr/bin, and the
# manual install steps of its header replaced by the packaged ones.
awk '
  /^# Install:/ { print "# Installed by the oauthrelay package, which neither enables nor starts it:"
                  print "#   edit /etc/oauthrelay/config.toml (or run: oauthrelay init), then"
                  print "#   oauthrelay check -config /etc/oauthrelay/config.toml"
                  print "#   systemctl enable --now oauthrelay"; skip = 1; next }
  skip && /^#   / { next }
  { skip = 0; gsub("/usr/local/bin/oauthrelay", "/usr/bin/oauthrelay"); print }
' packaging/oauthrelay.service >"$stage/oauthrelay.service"
gzip -9n <packaging/oauthrelay.8 >"$stage/oauthrelay.8.gz"

for packager in deb rpm; do
  echo "== $packager (nfpm)"
  PKGVERSION=$pkgversion PKGARCH=$arch GOFLAGS= \
    go run "$NFPM" package --config packaging/nfpm.yaml --packager "$packager" --target dist/
done

echo "== windows zip (oauthrelay.exe, config.toml.example, install.ps1)"
CGO_ENABLED=0 GOOS=windows GOARCH=amd64 GOFLAGS=-buildvcs=true \
  go build -trimpath -ldflags "$ldflags" -o "$stage/windows/oauthrelay.exe" ./cmd/oauthrelay
cp config.toml.example packaging/windows/install.ps1 "$stage/windows/"
zip="oauthrelay_${pkgversion}_windows_amd64.zip"
(cd "$stage/windows" && zip -q -X "../../$zip" oauthrelay.exe config.toml.example install.ps1)

rm -rf "$stage"
echo "== dist/"
ls -l dist/
