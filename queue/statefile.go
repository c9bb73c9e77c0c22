package queue

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
)

// stateFileDir holds the small files the relay keeps beside the mail (the
// recipients each mailbox sent in the last 24 hours, for example). It is
// made on first use, so spools from before it existed still open.
const stateFileDir = "state"

var stateSeq atomic.Uint64

// validStateName reports whether name is a plain file name that stays
// inside state/.
func validStateName(name string) bool {
	return name != "" && len(name) <= 128 && !strings.HasPrefix(name, ".") &&
		!strings.ContainsAny(name, `/\:`) && filepath.Base(name) == name
}

func (s *Spool) statePath(name string) string {
	return filepath.Join(s.dir, stateFileDir, name)
}

// SaveState replaces the state file name (a plain file name, such as
// "recipients-24h.json") with data, durably: when SaveState returns nil the
// new content survives a crash or power loss, and a crash before then
// leaves the old content whole. Only the process that delivers (serve)
// should save state: a queue command run as another user would leave
// files the relay cannot replace.
func (s *Spool) SaveState(name string, data []byte) error {
	if !validStateName(name) {
		return fmt.Errorf("spool: state file name %q is not a plain file name", name)
	}
	id := stateFileDir + "/" + name
	dir := filepath.Join(s.dir, stateFileDir)
	if err := os.Mkdir(dir, 0o700); err == nil {
		// A new directory is durable only once its parent is synced.
		if err := s.sync.dirs(s.dir); err != nil {
			return &WriteError{ID: id, Op: "fsync directory", Err: err}
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return &WriteError{ID: id, Op: "create " + stateFileDir + "/", Err: err}
	}
	// A name of its own per call: two saves of one file never share a
	// temporary file. Recovery removes one a crash leaves in tmp/.
	tmp := s.tmpPath(fmt.Sprintf("%s.%d.%d.state", name, os.Getpid(), stateSeq.Add(1)))
	return s.replace(id, "state file", tmp, s.statePath(name), data, dir)
}

// LoadState returns the content of the state file name. When it was never
// saved the error satisfies errors.Is(err, fs.ErrNotExist).
func (s *Spool) LoadState(name string) ([]byte, error) {
	if !validStateName(name) {
		return nil, fmt.Errorf("spool: state file name %q is not a plain file name", name)
	}
	return os.ReadFile(s.statePath(name))
}
