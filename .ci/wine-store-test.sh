#!/usr/bin/env bash
# Optional, not part of test.sh: runs the oauth package's Windows tests
# (the certificate store: TestStoreLegacyCSP, TestStoreRoundTrip) under Wine
# from Debian. Needs root for apt-get the first time (wine64 and the MinGW
# compiler, about 1 GB). Go 1.26 programs need bcryptprimitives.dll's
# ProcessPrng, which Wine 8 lacks: a small stub DLL built here forwards it
# to RtlGenRandom. Wine 8's ncrypt cannot reopen a persisted CNG key, so
# TestStoreRoundTrip skips there; Go's TempDir cleanup also fails under
# Wine ("unlinkat … Invalid function"), which marks tests that use it as
# failed after their bodies passed: read the log, not only the exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wine >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq wine64 gcc-mingw-w64-x86-64-win32 >/dev/null
fi
work=$(mktemp -d)
trap 'wineserver -k 2>/dev/null; rm -rf "$work" 2>/dev/null || true' EXIT
export WINEPREFIX="$work/prefix" WINEDEBUG=-all
cat >"$work/prng.c" <<'C'
#include <windows.h>
BOOLEAN NTAPI SystemFunction036(PVOID buf, ULONG len);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
	while (len > 0) {
		ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
		if (!SystemFunction036(data, n)) return FALSE;
		data += n; len -= n;
	}
	return TRUE;
}
C
x86_64-w64-mingw32-gcc -shared -O2 -o "$work/bcryptprimitives.dll" "$work/prng.c" -ladvapi32
wineboot -i >/dev/null 2>&1 || true
cp "$work/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"
GOOS=windows GOARCH=amd64 go test -c -o "$work/oauth.test.exe" ./oauth
wine "$work/oauth.test.exe" -test.v -test.run "${1:-TestStore}" >"$work/log" 2>&1 || true
grep -E '^(---|\s+certstore)' "$work/log" || true
# Pass when no store test reported an error of its own (a skip under Wine
# is not one) and the legacy CSP test passed.
if grep -E '^\s+certstore_windows_test.go:[0-9]+: ' "$work/log" | grep -qv 'Wine cannot reopen a CNG key'; then
  echo "FAIL: a store test failed"; exit 1
fi
grep -q -- '--- PASS: TestStoreLegacyCSP' "$work/log"
echo "store tests passed under Wine"
