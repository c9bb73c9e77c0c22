//go:build !linux

package queue

// fsSyncer is Linux-only (syncfs(2)); elsewhere Commit fsyncs each file
// and its directories.
func fsSyncer(dir string) func() error { return nil }
