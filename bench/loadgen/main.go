// Command loadgen is the Go half of bench/run.sh: the load and measuring
// tools that smtp-source does not provide.
//
//	loadgen latency -addr A -rate 200 -duration 10s   DATA's final dot → 250, p50/p99
//	loadgen fill    -spool DIR -n 10000 -mailboxes 20  spool messages directly (drain test)
//	loadgen idle    -addr A -n 1000                    hold idle SMTP connections open
//	loadgen big     -addr A -size 35000000             send one large message
//	loadgen measure -pid P [-tree] -- CMD ARGS...      run CMD; report wall time, CPU, peak memory of P
//	loadgen proc    -pid P [-tree]                     print CPU seconds and memory of P now
//	loadgen spoolwait -spool DIR -timeout 5m           wait until the spool has no message left
//
// Results are printed as key=value lines for the script to read. It is a
// benchmark tool, not part of the relay: loopback only, no TLS, no AUTH
// (the bench configuration trusts 127.0.0.1).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen latency|fill|idle|big|measure|proc|spoolwait [flags]")
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "latency":
		err = latency(args)
	case "fill":
		err = fill(args)
	case "idle":
		err = idle(args)
	case "big":
		err = big(args)
	case "measure":
		err = measure(args)
	case "proc":
		err = procNow(args)
	case "spoolwait":
		err = spoolWait(args)
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}
