//go:build !windows

package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

// A CPU profile for benchmarks (bench/run.sh), deliberately not a flag:
// with OAUTHRELAY_CPUPROFILE=FILE in its environment the process profiles
// itself from the start, and SIGUSR1 stops the profile and writes FILE.
// Read it with `go tool pprof -top oauthrelay FILE`.
func init() {
	path := os.Getenv("OAUTHRELAY_CPUPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "oauthrelay: OAUTHRELAY_CPUPROFILE:", err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "oauthrelay: OAUTHRELAY_CPUPROFILE:", err)
		f.Close()
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		<-sig
		signal.Stop(sig)
		pprof.StopCPUProfile()
		f.Close()
	}()
}
