package queue

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

var idMu sync.Mutex
var lastID time.Time

// NewID returns a queue id that sorts by the time it was made and is unique
// within this process (and, by its random tail, across restarts):
// 20261122T205621.123456-3f9a1c.
func NewID(now time.Time) string {
	idMu.Lock()
	now = now.UTC().Truncate(time.Microsecond)
	if !now.After(lastID) {
		now = lastID.Add(time.Microsecond)
	}
	lastID = now
	idMu.Unlock()
	var r [3]byte
	_, _ = rand.Read(r[:])
	return now.Format("20060102T150405.000000") + "-" + hex.EncodeToString(r[:])
}

// ValidID reports whether s has the shape of a queue id, so that ids typed
// on a command line or read from disk can never name a path outside the
// spool.
func ValidID(s string) bool {
	if len(s) < 10 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return s[0] != '.'
}
