//go:build linux

package queue

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// fsSyncer returns a function that makes every write to the filesystem
// holding dir durable (syncfs(2)), or nil when this kernel's syncfs cannot be
// trusted: before Linux 5.8 it did not report write-back errors, so a
// failed write would still be acknowledged.
func fsSyncer(dir string) func() error {
	if !kernelAtLeast(5, 8) {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	fd := int(f.Fd())
	return func() error {
		for {
			err := unix.Syncfs(fd)
			if err != unix.EINTR {
				if err != nil {
					return &os.PathError{Op: "syncfs", Path: f.Name(), Err: err}
				}
				return nil
			}
		}
	}
}

func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return false
	}
	ma, err1 := strconv.Atoi(parts[0])
	// The minor number may carry a suffix ("8-rc1").
	digits := parts[1]
	if i := strings.IndexFunc(digits, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		digits = digits[:i]
	}
	mi, err2 := strconv.Atoi(digits)
	if err1 != nil || err2 != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
