package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// StartPostfix starts a private Postfix instance (the binary at postfix)
// in a new directory under /var/tmp named from prefix, with the main.cf
// that mainCf returns for that directory and the log file Postfix is to
// write. It returns the instance's configuration directory (for
// sendmail -C) and its log file; the instance is stopped, and the log shown
// on failure, when the test ends. Without Debian's Postfix files to copy
// the test skips.
func StartPostfix(t *testing.T, postfix, prefix string, mainCf func(work, logFile string) string) (etc, logFile string) {
	t.Helper()
	// Postfix's daemons run as user postfix and must reach their queue:
	// t.TempDir() is private to root, so use a world-searchable directory.
	w, err := os.MkdirTemp("/var/tmp", prefix)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(w, 0o755)
	etc = filepath.Join(w, "etc")
	for _, d := range []string{etc, filepath.Join(w, "queue"), filepath.Join(w, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"master.cf", "postfix-files"} {
		b, err := os.ReadFile(filepath.Join("/etc/postfix", f))
		if err != nil {
			os.RemoveAll(w)
			t.Skipf("no Postfix files to copy: %v", err)
		}
		os.WriteFile(filepath.Join(etc, f), b, 0o644)
	}
	exec.Command("cp", "-r", "/etc/postfix/postfix-files.d", etc).Run()
	logFile = filepath.Join(w, "postfix.log")
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(mainCf(w, logFile)), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	run("postconf", "-c", etc, "-MX", "smtp/inet")
	run("postconf", "-c", etc, "-F", "*/*/chroot = n")
	// set-permissions is slow (it walks every Postfix file), but without
	// it sendmail cannot drop the message into the private queue.
	exec.Command(postfix, "-c", etc, "set-permissions").Run()
	t.Cleanup(func() {
		exec.Command(postfix, "-c", etc, "stop").Run()
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("postfix log:\n%s", b)
		}
		os.RemoveAll(w)
	})
	run(postfix, "-c", etc, "start")
	return etc, logFile
}
