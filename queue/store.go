package queue

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrNotFound means no envelope with that id is in the states looked at.
var ErrNotFound = errors.New("no such message in the queue")

// Load reads the envelope id from state st.
func (s *Spool) Load(st State, id string) (*Envelope, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	b, err := os.ReadFile(s.envPath(st, id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	e, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("envelope %s/%s.json: %w", st, id, err)
	}
	e.State = st
	return e, nil
}

// Find looks for id in every state.
func (s *Spool) Find(id string) (*Envelope, error) {
	for _, st := range States {
		e, err := s.Load(st, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		return e, err
	}
	return nil, ErrNotFound
}

// Move writes env into state to (renaming it out of its current state) and
// makes the change durable. When the envelope is no longer where env.State
// says, someone else (an operator's queue command) moved it: Move returns
// ErrNotFound and changes nothing.
func (s *Spool) Move(env *Envelope, to State) error {
	from := env.State
	if from != to && (from == Active || from == Hold) {
		// An envelope in active/ (a delivery worker's) or hold/ (a queue
		// command's) has one owner: write the new content there first,
		// then rename, so the envelope appears in a state others act on
		// with its final content in one step (a rewrite after the rename
		// could re-create a file someone had just moved away).
		if err := s.save(env, from); err != nil {
			return err
		}
		if err := os.Rename(s.envPath(from, env.ID), s.envPath(to, env.ID)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return ErrNotFound
			}
			return err
		}
		env.State = to
		return s.durable(filepath.Join(s.dir, string(to)), filepath.Join(s.dir, string(from)))
	}
	if from != to {
		if err := os.Rename(s.envPath(from, env.ID), s.envPath(to, env.ID)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return ErrNotFound
			}
			return err
		}
		env.State = to
	}
	if err := s.save(env, from); err != nil {
		if from != to {
			// Undo the rename, so that an error means nothing changed and
			// the caller's idea of the state stays true.
			if os.Rename(s.envPath(to, env.ID), s.envPath(from, env.ID)) == nil {
				env.State = from
			}
		}
		return err
	}
	return nil
}

// Save rewrites env in its current state.
func (s *Spool) Save(env *Envelope) error { return s.save(env, env.State) }

func (s *Spool) save(env *Envelope, from State) error {
	b, err := Encode(env)
	if err != nil {
		return err
	}
	tmp := s.tmpPath(env.ID + ".json." + string(env.State))
	dirs := []string{filepath.Join(s.dir, string(env.State))}
	if from != env.State {
		dirs = append(dirs, filepath.Join(s.dir, string(from)))
	}
	return s.replace(env.ID, "envelope", tmp, s.envPath(env.State, env.ID), b, dirs...)
}

// replace writes b to tmp, makes it durable and renames it over dst, then
// makes the rename durable in dirs. what names the file in errors, id the
// message (or state file) it belongs to.
func (s *Spool) replace(id, what, tmp, dst string, b []byte, dirs ...string) error {
	grouped := s.grouped()
	if err := writeFile(tmp, b, !grouped); err != nil {
		os.Remove(tmp)
		return &WriteError{ID: id, Op: "write " + what, Err: err}
	}
	if grouped {
		// The new content must be on disk before the rename that replaces
		// the old one is.
		if err := s.syncFS(); err != nil {
			os.Remove(tmp)
			return &WriteError{ID: id, Op: "sync spool (" + what + ")", Err: err}
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return &WriteError{ID: id, Op: "rename " + what, Err: err}
	}
	return s.durable(dirs...)
}

// Remove deletes a message that needs no more work (delivered, or deleted
// by an operator). The envelope goes first, so a crash in between leaves an
// orphan body for recovery rather than an envelope without a body.
func (s *Spool) Remove(env *Envelope) error {
	if err := os.Remove(s.envPath(env.State, env.ID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Remove(s.BodyPath(env.ID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return s.durable(filepath.Join(s.dir, string(env.State)), filepath.Join(s.dir, msgDir))
}

// OpenBody opens the message body for reading.
func (s *Spool) OpenBody(id string) (*os.File, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	return os.Open(s.BodyPath(id))
}

// IDs lists the ids in state st, oldest first.
func (s *Spool) IDs(st State) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, string(st)))
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(ents))
	for _, e := range ents {
		n := e.Name()
		if id, ok := strings.CutSuffix(n, ".json"); ok && ValidID(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// List loads every readable envelope in the given states (all when none
// are given). Envelopes that vanish while listing (delivered meanwhile) are
// skipped; unreadable ones are returned in bad.
func (s *Spool) List(states ...State) (envs []*Envelope, bad []string, err error) {
	if len(states) == 0 {
		states = States
	}
	for _, st := range states {
		ids, err := s.IDs(st)
		if err != nil {
			return nil, nil, err
		}
		for _, id := range ids {
			e, err := s.Load(st, id)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				bad = append(bad, string(st)+"/"+id)
			default:
				envs = append(envs, e)
			}
		}
	}
	return envs, bad, nil
}

// Body returns a reader over the body of id and its size, for callers that
// stream it upstream.
func (s *Spool) Body(id string) (io.ReadCloser, int64, error) {
	f, err := s.OpenBody(id)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}
