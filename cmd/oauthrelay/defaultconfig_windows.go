//go:build windows

package main

import (
	"os"
	"path/filepath"
)

// defaultConfig is where the Windows service keeps its file, so that
// doctor, queue and check find the same one without -config.
var defaultConfig = filepath.Join(programData(), "config.toml")

// programData is the service's directory for configuration, spool and log.
func programData() string {
	if d := os.Getenv("ProgramData"); d != "" {
		return filepath.Join(d, "oauthrelay")
	}
	return `C:\ProgramData\oauthrelay`
}
