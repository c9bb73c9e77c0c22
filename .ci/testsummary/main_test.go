package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTimedOutPackage runs a real `go test -json` on a package whose test
// hangs until the timeout: Go never ends that test with a fail event, so
// its output (the panic and the goroutines) must still be shown, the test
// counted as failed, and its name repeated at the end.
func TestTimedOutPackage(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module hang\n\ngo 1.24\n")
	write("hang_test.go", `package hang

import "testing"

func TestQuick(t *testing.T) {}

func TestHang(t *testing.T) {
	t.Run("sub", func(t *testing.T) {
		t.Log("waiting for ever")
		select {}
	})
}
`)
	cmd := exec.Command("go", "test", "-json", "-timeout", "3s", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	events, _ := cmd.Output() // the package fails: that is the point
	var report strings.Builder
	summary, ok := summarize(strings.NewReader(string(events)), &report)
	got := report.String()
	if ok {
		t.Errorf("a timed-out package passed:\n%s", got)
	}
	if summary != "1 passed, 2 failed, 0 skipped" {
		t.Errorf("summary %q, want 1 passed, 2 failed", summary)
	}
	for _, want := range []string{
		"--- FAIL: TestHang/sub (did not finish)",
		"waiting for ever",
		"panic: test timed out after 3s",
		"did not finish: TestHang, TestHang/sub",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
}

// TestPassingPackage checks the ordinary case stays quiet and passes.
func TestPassingPackage(t *testing.T) {
	events := `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"output","Package":"p","Output":"ok  \tp\t0.01s\n"}
{"Action":"pass","Package":"p"}
`
	var report strings.Builder
	summary, ok := summarize(strings.NewReader(events), &report)
	if !ok || summary != "1 passed, 0 failed, 0 skipped" || report.String() != "ok  \tp\t0.01s\n"+summary+"\n" {
		t.Errorf("ok=%v summary %q report:\n%s", ok, summary, report.String())
	}
}
