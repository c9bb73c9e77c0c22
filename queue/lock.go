package queue

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// lockFile is held, exclusively, by the one process that delivers a
// spool. The kernel releases it when that process dies, however it dies,
// so there is never a stale lock to clean up.
const lockFile = "lock"

// ErrLocked is wrapped by Lock's error when another process holds the spool.
var ErrLocked = errors.New("spool is in use")

// Lock is an exclusive hold on a spool directory.
type Lock struct {
	f *os.File
}

// LockSpool takes the spool's exclusive lock, creating the directory if
// needed, and records this process in it. It fails at once, naming the
// holder, when another process (another `serve`) has it. Queue commands do
// not take it: they work beside a running serve.
func LockSpool(dir string, now time.Time) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool %s: %w", dir, err)
	}
	p := filepath.Join(dir, lockFile)
	// Held open read-only: a file open for writing would keep the spool's
	// filesystem from being remounted read-only.
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool %s: cannot open its lock file: %w", dir, err)
	}
	if err := lockExclusive(f); err != nil {
		holder := describeHolder(f)
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("%w: spool %s is in use by %s; stop that relay first, or give this one its own [spool] dir", ErrLocked, dir, holder)
		}
		return nil, fmt.Errorf("spool %s: cannot lock %s: %w", dir, p, err)
	}
	// Who holds it, for the next process that asks (written through
	// another descriptor; the lock is advisory).
	os.WriteFile(p, fmt.Appendf(nil, "pid %d\nstarted %s\n", os.Getpid(), now.UTC().Format(time.RFC3339)), 0o600)
	return &Lock{f: f}, nil
}

// Release gives the lock up.
func (l *Lock) Release() {
	if l != nil && l.f != nil {
		unlock(l.f)
		l.f.Close()
		l.f = nil
	}
}

// describeHolder reads what the holder wrote: "process 1234 (started …)".
func describeHolder(f *os.File) string {
	b := make([]byte, 256)
	n, _ := f.ReadAt(b, 0)
	var pid, started string
	for _, line := range strings.Split(string(b[:n]), "\n") {
		k, v, _ := strings.Cut(line, " ")
		switch k {
		case "pid":
			if _, err := strconv.Atoi(v); err == nil {
				pid = v
			}
		case "started":
			started = v
		}
	}
	switch {
	case pid != "" && started != "":
		return "process " + pid + " (started " + started + ")"
	case pid != "":
		return "process " + pid
	}
	return "another process"
}
