package queue

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Operator actions (the `oauthrelay queue` commands). They are safe on a
// live spool while serve delivers from it:
//
//   - An envelope is first claimed with a single rename into hold/, which
//     serve never reads. A delivery worker claims mail with a rename too, so
//     exactly one of them wins; the loser sees the file gone.
//   - Envelopes in active/ are never touched: their worker owns them, and it
//     writes an envelope's new content before renaming it out of active/.
//   - The new content is written while the envelope is in hold/, and only
//     then is it renamed into its new state, in one step. A crash in between
//     leaves the message on hold, visible to `queue list`, never lost.
//
// serve reads incoming/ every second and treats whatever appears there as
// due now, so Retry, Release and Requeue take effect within a second or two.

// ErrActive means the message is being delivered right now.
var ErrActive = errors.New("it is being delivered right now; try again in a moment")

// StateError is an operator action that does not apply to the state the
// message is in, with what to do instead.
type StateError struct {
	ID    string
	State State
	Hint  string
}

func (e *StateError) Error() string {
	msg := fmt.Sprintf("message %s is in %s/", e.ID, e.State)
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

// Locate returns the state id is in, without reading the envelope.
func (s *Spool) Locate(id string) (State, error) {
	if !ValidID(id) {
		return "", ErrNotFound
	}
	for _, st := range States {
		if _, err := os.Lstat(s.msgPath(st, id)); err == nil {
			return st, nil
		}
	}
	if s.isV1Corrupt(id) {
		return Corrupt, nil
	}
	return "", ErrNotFound
}

// claim moves id out of one of the allowed states into hold/ and returns
// the envelope as it is there. Active is never allowed.
func (s *Spool) claim(id string, hint func(State) string, allowed ...State) (*Envelope, error) {
	for range 5 {
		st, err := s.Locate(id)
		if err != nil {
			return nil, err
		}
		if st == Active {
			return nil, fmt.Errorf("message %s: %w", id, ErrActive)
		}
		ok := false
		for _, a := range allowed {
			ok = ok || a == st
		}
		if !ok {
			return nil, &StateError{ID: id, State: st, Hint: hint(st)}
		}
		if st != Hold {
			if err := os.Rename(s.msgPath(st, id), s.msgPath(Hold, id)); err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue // moved meanwhile (by delivery): look again
				}
				return nil, err
			}
			if err := s.durable(filepath.Join(s.dir, string(Hold)), filepath.Join(s.dir, string(st))); err != nil {
				return nil, err
			}
		}
		env, err := s.Load(Hold, id)
		if err != nil {
			return nil, err
		}
		env.State = Hold
		return env, nil
	}
	return nil, fmt.Errorf("message %s keeps changing state; try again in a moment", id)
}

// release writes env (which is in hold/, owned by this command) and moves
// it into to: Move writes an owned envelope first and renames it second.
func (s *Spool) release(env *Envelope, to State) error {
	env.State = Hold
	return s.Move(env, to)
}

func hintFor(action string) func(State) string {
	return func(st State) string {
		switch st {
		case Hold:
			return "use `oauthrelay queue release` to let it go"
		case Failed:
			return "use `oauthrelay queue requeue-failed` to try it again"
		case Corrupt:
			return "its envelope cannot be read: inspect it, fix it and move it to incoming/ by hand, or `oauthrelay queue delete` it"
		case Incoming:
			if action == "retry" {
				return "it is already due and will be tried within a second or two"
			}
		case Deferred:
			if action == "release" {
				return "it is not on hold; use `oauthrelay queue retry` to make it due now"
			}
		}
		return "nothing to " + action
	}
}

// Retry makes a deferred message due now.
func (s *Spool) Retry(id string) (*Envelope, error) {
	env, err := s.claim(id, hintFor("retry"), Deferred)
	if err != nil {
		return nil, err
	}
	env.NextAttempt = s.now()
	return env, s.release(env, Incoming)
}

// Hold stops delivery of a waiting message until Release.
func (s *Spool) Hold(id string) (*Envelope, error) {
	env, err := s.claim(id, hintFor("hold"), Incoming, Deferred, Hold)
	if err != nil {
		return nil, err
	}
	return env, nil
}

// Release makes a held message due now.
func (s *Spool) Release(id string) (*Envelope, error) {
	env, err := s.claim(id, hintFor("release"), Hold)
	if err != nil {
		return nil, err
	}
	env.NextAttempt = s.now()
	return env, s.release(env, Incoming)
}

// Requeue sends a failed message back for another try, after an admin
// fixed the cause: its failed recipients become pending again (delivered
// ones stay delivered) and it is due now. Notified is kept, so when the
// same recipient fails again its sender is not told a second time. A
// message older than [spool] max_age still gets one more attempt.
func (s *Spool) Requeue(id string) (*Envelope, error) {
	env, err := s.claim(id, hintFor("requeue"), Failed)
	if err != nil {
		return nil, err
	}
	now := s.now()
	for _, r := range env.Recipients {
		if r.State == RcptFailed {
			r.State, r.Updated = RcptPending, now
		}
	}
	env.FailReason = ""
	env.NextAttempt = now
	return env, s.release(env, Incoming)
}

// Delete removes a message and its body for good, in any state except
// active/. It returns the envelope it removed (nil for a corrupt one).
func (s *Spool) Delete(id string) (*Envelope, error) {
	st, err := s.Locate(id)
	if err != nil {
		return nil, err
	}
	if st == Corrupt {
		// serve never reads corrupt/: remove it directly.
		return nil, s.Remove(&Envelope{ID: id, State: Corrupt, hist: true})
	}
	env, err := s.claim(id, hintFor("delete"), Incoming, Deferred, Hold, Failed)
	if err != nil {
		return nil, err
	}
	return env, s.Remove(env)
}

// Age is how long a message has been queued at now.
func (e *Envelope) Age(now time.Time) time.Duration {
	return now.Sub(e.Received)
}
