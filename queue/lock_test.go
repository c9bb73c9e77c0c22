package queue

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// One holder at a time; the second is told who holds it; a release (or
// the holder's death, which the kernel handles the same way) frees it.
func TestLockSpool(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	l, err := LockSpool(dir, at)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockSpool(dir, at)
	want := fmt.Sprintf("spool %s is in use by process %d (started 2026-12-01T09:00:00Z)", dir, os.Getpid())
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock: %v, want %q", err, want)
	}
	l.Release()
	l2, err := LockSpool(dir, at)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	l2.Release()
	// The lock file does not disturb the spool.
	s, rep, err := Open(dir, Options{Recover: true})
	if err != nil || s == nil || len(rep.Corrupt) != 0 {
		t.Fatalf("open beside the lock file: %v %+v", err, rep)
	}
}
