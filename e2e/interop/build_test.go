package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// buildDir holds what the tests compile (the Java and C# clients), once
// per test run, whatever the number of cases; TestMain removes it.
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "oauthrelay-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// built remembers each build's outcome, so a failed build is reported by
// every test that needs it without being retried.
var (
	buildMu sync.Mutex
	builds  = map[string]error{}
)

// build runs the compiler command once per test run under key.
func build(t *testing.T, key string, name string, args ...string) {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	err, done := builds[key]
	if !done {
		out, e := exec.Command(name, args...).CombinedOutput()
		if e != nil {
			err = fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), e, out)
		}
		builds[key] = err
	}
	if err != nil {
		t.Fatalf("building the %s client: %v", key, err)
	}
}

// jakartaClasspath is Debian's Jakarta Mail and Activation, from
// libjakarta-mail-java.
func jakartaClasspath(t *testing.T) string {
	t.Helper()
	var cp []string
	for _, jar := range []string{"jakarta-mail.jar", "jakarta-activation.jar"} {
		p := filepath.Join("/usr/share/java", jar)
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is missing (apt-get install libjakarta-mail-java)", p)
		}
		cp = append(cp, p)
	}
	return strings.Join(cp, ":")
}

// runQuiet runs a command for its exit status only.
func runQuiet(name string, args ...string) error {
	return exec.Command(name, args...).Run()
}
