//go:build windows

package queue

// syncDir is a no-op on Windows: NTFS journals metadata, and directories
// cannot be opened for FlushFileBuffers without backup privileges.
func syncDir(path string) error { return nil }
