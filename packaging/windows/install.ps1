# Installs oauthrelay as a Windows service. From an elevated PowerShell, in
# the folder this zip was extracted to:
#
#   powershell -ExecutionPolicy Bypass -File .\install.ps1
#
# It copies oauthrelay.exe to Program Files, puts the example configuration
# in %ProgramData%\oauthrelay\config.toml (unless one is there) with the
# spool beside it, gives the service's account (LocalService) the rights it
# needs there, and registers the service with `oauthrelay service install`.
# It does not start the service: edit and check the configuration first.
param(
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'oauthrelay'),
    [string]$DataDir = (Join-Path $env:ProgramData 'oauthrelay')
)
$ErrorActionPreference = 'Stop'

$admin = ([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()).IsInRole(
    [Security.Principal.WindowsBuiltInRole]::Administrator)
if (-not $admin) {
    Write-Error 'Run this script from an elevated PowerShell (Run as administrator).'
}

New-Item -ItemType Directory -Force -Path $InstallDir, $DataDir, (Join-Path $DataDir 'spool') | Out-Null
Copy-Item -Force (Join-Path $PSScriptRoot 'oauthrelay.exe') $InstallDir
$exe = Join-Path $InstallDir 'oauthrelay.exe'

$config = Join-Path $DataDir 'config.toml'
if (-not (Test-Path $config)) {
    # The example's spool is the Linux path; on Windows it lives in ProgramData.
    $spool = Join-Path $DataDir 'spool'
    (Get-Content (Join-Path $PSScriptRoot 'config.toml.example')) -replace '^dir = "/var/spool/oauthrelay"', "dir = '$spool'" |
        Set-Content -Encoding UTF8 $config
    Write-Host "Wrote the example configuration to $config"
}

# LocalService writes the spool and the log; the configuration holds
# secrets, so only administrators, SYSTEM and the service may read it.
icacls $DataDir /grant 'NT AUTHORITY\LocalService:(OI)(CI)M' | Out-Null
icacls $config /inheritance:r /grant:r 'BUILTIN\Administrators:F' 'NT AUTHORITY\SYSTEM:F' 'NT AUTHORITY\LocalService:R' | Out-Null

& $exe service install -config $config
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

Write-Host ''
Write-Host 'Next:'
Write-Host "  1. edit $config (or run: & '$exe' init -config '$config' --force)"
Write-Host "  2. & '$exe' check -config '$config'"
Write-Host "  3. & '$exe' service start"
