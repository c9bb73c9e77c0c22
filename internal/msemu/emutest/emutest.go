// Package emutest starts the Microsoft 365 emulator for a test: started,
// and closed when the test ends. It is apart from internal/testkit, which
// the emulator's own tests use and so cannot import the emulator.
package emutest

import (
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
)

// Start starts an emulator with o, failing the test if it cannot, and
// closes it when the test ends.
func Start(t testing.TB, o msemu.Options) *msemu.Emulator {
	t.Helper()
	e, err := msemu.New(o)
	if err == nil {
		err = e.Start()
	}
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}
