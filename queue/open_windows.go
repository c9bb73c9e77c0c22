package queue

import "os"

// openRead opens a spool file for reading.
func openRead(path string) (*os.File, error) { return os.Open(path) }

// rename renames a spool file.
func rename(from, to string) error { return os.Rename(from, to) }

// createExcl creates a new spool file for writing.
func createExcl(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
}

// openWrite opens an existing spool file for writing.
func openWrite(path string) (*os.File, error) { return os.OpenFile(path, os.O_WRONLY, 0) }
