package delivery

import (
	"time"

	"github.com/oauthrelay/oauthrelay/internal/backoff"
)

// spoolFault is a spool that delivery cannot write (a full disk, a disk
// remounted read-only). The log says so once when it starts, with the fix,
// and once when it ends, with the count; meanwhile every message that
// needs a write backs off, doubling, instead of retrying (and logging)
// at every tick.
type spoolFault struct {
	since    time.Time
	failures int
}

// SpoolFault reports whether delivery cannot write the spool now, and how
// many writes have failed since it started.
func (s *Scheduler) SpoolFault() (failing bool, failures int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.spoolErr == nil {
		return false, 0
	}
	return true, s.spoolErr.failures
}

// spoolWriteFailed records a failed spool write (what was being done to
// which message) and returns how long that message should wait.
func (s *Scheduler) spoolWriteFailed(what, id string, err error, minDelay, maxDelay time.Duration) time.Duration {
	s.mu.Lock()
	f := s.spoolErr
	first := f == nil
	if first {
		f = &spoolFault{since: s.o.Now()}
		s.spoolErr = f
	}
	f.failures++
	n := f.failures
	s.mu.Unlock()
	if first {
		s.log.Error(what+": the spool cannot be written; deliveries that need to update it back off until it can, and nothing is lost",
			"id", id, "spool", s.spool.Dir(), "error", err.Error(),
			"fix", "free disk space on "+s.spool.Dir()+" and check that it is mounted read-write and owned by the relay's user")
	} else {
		s.log.Debug(what, "id", id, "error", err.Error(), "failed_writes", n)
	}
	return backoff.Doubling(minDelay, maxDelay, n)
}

// spoolWriteOK ends a spool fault, if there was one.
func (s *Scheduler) spoolWriteOK() {
	s.mu.Lock()
	f := s.spoolErr
	s.spoolErr = nil
	s.mu.Unlock()
	if f != nil {
		s.log.Info("the spool can be written again; deliveries resume", "spool", s.spool.Dir(),
			"failed_writes", f.failures, "lasted", s.o.Now().Sub(f.since).Round(time.Second).String())
	}
}
