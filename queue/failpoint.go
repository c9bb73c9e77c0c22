package queue

import "os"

// failpointName is the point at which the process kills itself, for the
// crash tests of the commit point: OAUTHRELAY_FAILPOINT=commit-before-sync
// (the message file is written, not yet synced) or commit-after-sync (it
// is durable, the client has not heard 250). Unset, as it always is
// outside those tests, it costs one string comparison per commit.
var failpointName = os.Getenv("OAUTHRELAY_FAILPOINT")

// failpoint kills the process, as abruptly as a crash, when name is the
// failpoint asked for.
func failpoint(name string) {
	if failpointName != "" && failpointName == name {
		if p, err := os.FindProcess(os.Getpid()); err == nil {
			p.Kill()
		}
		select {} // the kill is on its way
	}
}
