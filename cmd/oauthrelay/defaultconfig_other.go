//go:build !windows

package main

// defaultConfig is where admins put the file when they install a package.
var defaultConfig = "/etc/oauthrelay/config.toml"
