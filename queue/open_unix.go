//go:build !windows

package queue

import (
	"os"
	"syscall"
)

// openRead opens a spool file for reading with one open(2) and one
// fcntl(2). os.Open would also try the file in the network poller, which
// refuses regular files, and switch its blocking mode there and back:
// seven system calls instead of two, for the two opens each delivery
// makes.
func openRead(path string) (*os.File, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}

// rename renames a spool file with one rename(2): os.Rename first looks
// at the target to refuse renaming over a directory, which a message
// file's target never is.
func rename(from, to string) error {
	if err := syscall.Rename(from, to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}

// createExcl creates a new spool file for writing, as openRead opens one
// for reading: without the poller's round trips.
func createExcl(path string) (*os.File, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o600)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}

// openWrite opens an existing spool file (a pooled one) for writing, as
// openRead opens one for reading: without the poller's round trips, on
// the path from DATA to the 250.
func openWrite(path string) (*os.File, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_CLOEXEC, 0)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return os.NewFile(uintptr(fd), path), nil
	}
}
