package delivery

import (
	"encoding/json"
	"errors"
	"io/fs"
	"strings"
	"time"
)

// The recipients each mailbox sent in the last 24 hours are kept in the
// spool, so that a restart does not forget how much of Exchange Online's
// 10,000 a day is used and run into SubmissionQuotaExceeded.
const recipientsFile = "recipients-24h.json"

// recipientBucket is one minute of a mailbox's recipients. Times are
// rounded up to the minute, so a restored window frees capacity slightly
// later than the original, never earlier.
type recipientBucket struct {
	At time.Time `json:"at"`
	N  int       `json:"n"`
}

// loadRecipients restores the 24-hour windows saved by an earlier run.
func (s *Scheduler) loadRecipients() {
	b, err := s.spool.LoadState(recipientsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	var saved map[string][]recipientBucket
	if err == nil {
		err = json.Unmarshal(b, &saved)
	}
	if err != nil {
		// Only a count for pacing: start afresh rather than refuse to run.
		s.log.Warn("cannot read the saved daily recipient counts; counting from zero", "file", recipientsFile, "error", err.Error())
		return
	}
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, buckets := range saved {
		mb := s.mailbox(strings.ToLower(addr))
		for _, bk := range buckets {
			if bk.N > 0 && bk.At.After(now.Add(-24*time.Hour)) && !bk.At.After(now.Add(time.Minute)) {
				mb.rcpts.add(bk.At, bk.N)
			}
		}
	}
}

// saveRecipients writes the current windows, a minute per entry.
func (s *Scheduler) saveRecipients() {
	now := s.o.Now()
	out := map[string][]recipientBucket{}
	s.mu.Lock()
	for addr, mb := range s.mbx {
		mb.rcpts.prune(now)
		var buckets []recipientBucket
		for _, e := range mb.rcpts.events {
			at := e.at.Truncate(time.Minute)
			if at.Before(e.at) {
				at = at.Add(time.Minute)
			}
			if n := len(buckets); n > 0 && buckets[n-1].At.Equal(at) {
				buckets[n-1].N += e.n
				continue
			}
			buckets = append(buckets, recipientBucket{At: at, N: e.n})
		}
		if len(buckets) > 0 {
			out[addr] = buckets
		}
	}
	s.mu.Unlock()
	b, err := json.MarshalIndent(out, "", "  ")
	if err == nil {
		err = s.spool.SaveState(recipientsFile, append(b, '\n'))
	}
	if err != nil {
		s.log.Warn("cannot save the daily recipient counts", "file", recipientsFile, "error", err.Error())
	}
}
