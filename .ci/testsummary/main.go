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
	"os"
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
	var passed, failed, skipped int
	pkgFailed := false
	out := map[string][]string{} // package/test → its output so far
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	for in.Scan() {
		line := in.Bytes()
		var e event
		if json.Unmarshal(line, &e) != nil {
			// Not an event (a build error printed as text): show it.
			fmt.Println(string(line))
			continue
		}
		key := e.Package + "\x00" + e.Test
		switch e.Action {
		case "output":
			if e.Test == "" {
				// Package lines: "ok  pkg 1.2s", "FAIL pkg", build errors.
				if s := strings.TrimRight(e.Output, "\n"); s != "PASS" && s != "FAIL" && !strings.HasPrefix(s, "=== ") {
					fmt.Println(s)
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
				continue
			}
			failed++
			fmt.Print(strings.Join(out[key], ""))
			delete(out, key)
		}
	}
	summary := fmt.Sprintf("%d passed, %d failed, %d skipped", passed, failed, skipped)
	fmt.Println(summary)
	if *countsFile != "" {
		os.WriteFile(*countsFile, []byte(summary+"\n"), 0o644)
	}
	if failed > 0 || pkgFailed {
		os.Exit(1)
	}
}
