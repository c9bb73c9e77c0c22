// Command testsummary reads `go test -json` on standard input and prints
// what a person reading CI needs: one line per package (ok, FAIL, no test
// files), the whole output of every test that failed, and at the end one
// line "N passed, N failed, N skipped" counting every test and subtest.
// With -counts FILE it also writes that line to FILE, so test.sh can repeat
// it as its last line. It exits 1 when a test or package failed.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	countsFile := flag.String("counts", "", "also write the summary line to `FILE`")
	flag.Parse()
	summary, ok := summarize(os.Stdin, os.Stdout)
	if *countsFile != "" {
		os.WriteFile(*countsFile, []byte(summary+"\n"), 0o644)
	}
	if !ok {
		os.Exit(1)
	}
}

// summarize reads the events from r, prints the report to w, and returns
// the summary line and whether every test and package passed.
func summarize(r io.Reader, w io.Writer) (summary string, ok bool) {
	var passed, failed, skipped int
	pkgFailed := false
	var hung []string            // tests cut off by a package's panic or timeout
	out := map[string][]string{} // package/test → its output so far
	in := bufio.NewScanner(r)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	for in.Scan() {
		line := in.Bytes()
		var e event
		if json.Unmarshal(line, &e) != nil {
			// Not an event (a build error printed as text): show it.
			fmt.Fprintln(w, string(line))
			continue
		}
		key := e.Package + "\x00" + e.Test
		switch e.Action {
		case "output":
			if e.Test == "" {
				// Package lines: "ok  pkg 1.2s", "FAIL pkg", build errors.
				if s := strings.TrimRight(e.Output, "\n"); s != "PASS" && s != "FAIL" && !strings.HasPrefix(s, "=== ") {
					fmt.Fprintln(w, s)
				}
				continue
			}
			out[key] = append(out[key], e.Output)
		case "pass":
			if e.Test != "" {
				passed++
			}
			delete(out, key)
		case "skip":
			if e.Test != "" {
				skipped++
			}
			delete(out, key)
		case "fail":
			if e.Test == "" {
				pkgFailed = true
				// A package that panicked or timed out never ends the
				// tests that were running: their output (the panic, the
				// goroutine dump) is still held here, so show it and
				// count them as failed.
				for _, k := range unfinished(out, e.Package) {
					failed++
					hung = append(hung, strings.SplitN(k, "\x00", 2)[1])
					fmt.Fprintf(w, "--- FAIL: %s (did not finish)\n", strings.SplitN(k, "\x00", 2)[1])
					fmt.Fprint(w, strings.Join(out[k], ""))
					delete(out, k)
				}
				continue
			}
			failed++
			fmt.Fprint(w, strings.Join(out[key], ""))
			delete(out, key)
		}
	}
	if len(hung) > 0 {
		// Repeated at the end, where a reader of a long log looks first.
		fmt.Fprintln(w, "did not finish:", strings.Join(hung, ", "))
	}
	summary = fmt.Sprintf("%d passed, %d failed, %d skipped", passed, failed, skipped)
	fmt.Fprintln(w, summary)
	return summary, failed == 0 && !pkgFailed
}

// unfinished returns the keys of pkg's tests that produced output but never
// passed, failed or skipped, in name order.
func unfinished(out map[string][]string, pkg string) []string {
	var keys []string
	for k := range out {
		if strings.HasPrefix(k, pkg+"\x00") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}
