//go:build !windows

package main

import (
	"fmt"
	"io"
)

func init() {
	register("service", command{summary: "(Windows only) install, uninstall, start or stop the Windows service", run: runService})
}

func runService(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "oauthrelay service: Windows services exist only on Windows. On Linux, install packaging/oauthrelay.service as a systemd unit (see the README's Packaging section) and use systemctl start|stop|reload oauthrelay.")
	return 2
}
