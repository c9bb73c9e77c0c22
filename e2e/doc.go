// Package e2e holds end-to-end tests: the whole relay — listener, spool,
// delivery scheduler, token sources — runs in-process against the
// Microsoft 365 emulator (package msemu), proving what the relay promises
// about credentials and delivery: every credential kind delivers, one token request serves any
// number of concurrent deliveries, no AUTH presents a token under the
// minimum lifetime, token faults are explained and keep mail queued, an
// outage backs off, and no secret, key or token reaches any output.
//
// The package has no non-test code; run it with `go test ./e2e/`.
package e2e
