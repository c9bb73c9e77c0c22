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

// ErrNotFound means no message with that id is in the states looked at.
var ErrNotFound = errors.New("no such message in the queue")

// Load reads the envelope of id in state st: its changed envelope in
// history/ when it has one, else the one its message file was committed
// with.
func (s *Spool) Load(st State, id string) (*Envelope, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	f, err := openRead(s.msgPath(st, id))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if st == Corrupt {
				return s.loadV1Corrupt(id)
			}
			return nil, ErrNotFound
		}
		return nil, err
	}
	defer f.Close()
	e, err := s.loadOpen(f, id)
	if err != nil {
		return nil, fmt.Errorf("message %s/%s%s: %w", st, id, msgExt, err)
	}
	e.State = st
	return e, nil
}

// loadOpen reads the envelope of the open message file f of id.
func (s *Spool) loadOpen(f *os.File, id string) (*Envelope, error) {
	b, err := os.ReadFile(s.histPath(id))
	switch {
	case err == nil:
		e, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("its envelope %s: %w", s.histPath(id), err)
		}
		if e.ID != id {
			return nil, fmt.Errorf("its envelope %s is for message %s", s.histPath(id), e.ID)
		}
		e.hist = true
		return e, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	e, ft, err := readTrailerEnvelope(f)
	if err != nil {
		return nil, err
	}
	if e.ID != id {
		return nil, fmt.Errorf("its envelope is for message %s", e.ID)
	}
	e.bodyLen = ft.body
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

// Claim takes a message for delivery: one rename from st into active/,
// which an operator's queue command (or another worker) cannot also win,
// and a read of its envelope. The file stays open for BodyOf until the
// Return, Move or Remove that ends the claim. The rename is not synced: should a crash
// lose it, the message is still in st, and a message in active/ after a
// crash goes back to incoming/ anyway. ErrNotFound means the message is
// no longer in st; a *WriteError, that the rename failed (the message is
// still in st); any other error, that the message is in active/ but its
// envelope cannot be read.
func (s *Spool) Claim(st State, id string) (*Envelope, error) {
	if !ValidID(id) {
		return nil, ErrNotFound
	}
	if err := rename(s.msgPath(st, id), s.msgPath(Active, id)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, &WriteError{ID: id, Op: "rename into active/", Err: err}
	}
	p := s.msgPath(Active, id)
	f, err := openRead(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	e, err := s.loadOpen(f, id)
	if err == nil && e.hist {
		// The body's length is in the footer, which a changed envelope
		// did not need read.
		e.bodyLen, err = bodySize(f)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("message %s/%s%s: %w", Active, id, msgExt, err)
	}
	e.State = Active
	e.file = f
	return e, nil
}

// unclaim closes the message file Claim left open: the claim ends.
func (env *Envelope) unclaim() {
	if env.file != nil {
		env.file.Close()
		env.file = nil
	}
}

// Return puts a claimed message back into to unchanged (a rename, not
// synced, for the same reason as Claim's).
func (s *Spool) Return(env *Envelope, to State) error {
	env.unclaim()
	if err := rename(s.msgPath(env.State, env.ID), s.msgPath(to, env.ID)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNotFound
		}
		return err
	}
	env.State = to
	return nil
}

// Move writes env (its changed envelope, in history/) and moves the
// message into state to, durably. When the message is no longer where
// env.State says, someone else (an operator's queue command) moved it:
// Move returns ErrNotFound and changes nothing.
func (s *Spool) Move(env *Envelope, to State) error {
	env.unclaim()
	from := env.State
	if from == to || from == Active || from == Hold {
		// A message in active/ (a delivery worker's) or hold/ (a queue
		// command's) has one owner: write the new envelope first, then
		// rename, so the message appears in a state others act on with
		// its final envelope in one step.
		if err := s.save(env); err != nil {
			return err
		}
		if from == to {
			return nil
		}
		if err := rename(s.msgPath(from, env.ID), s.msgPath(to, env.ID)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return ErrNotFound
			}
			return err
		}
		env.State = to
		return s.durable(filepath.Join(s.dir, string(to)), filepath.Join(s.dir, string(from)))
	}
	// Not ours until the rename succeeds.
	if err := rename(s.msgPath(from, env.ID), s.msgPath(to, env.ID)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return ErrNotFound
		}
		return err
	}
	env.State = to
	if err := s.save(env); err != nil {
		// Undo the rename, so that an error means nothing changed and
		// the caller's idea of the state stays true.
		if rename(s.msgPath(to, env.ID), s.msgPath(from, env.ID)) == nil {
			env.State = from
		}
		return err
	}
	return s.durable(filepath.Join(s.dir, string(to)), filepath.Join(s.dir, string(from)))
}

// Save writes env's changed envelope, durably; the message stays where
// it is.
func (s *Spool) Save(env *Envelope) error { return s.save(env) }

func (s *Spool) save(env *Envelope) error {
	b, err := Encode(env)
	if err != nil {
		return err
	}
	tmp := s.tmpPath(env.ID + ".json." + string(env.State))
	if err := s.replace(env.ID, "envelope", tmp, s.histPath(env.ID), b, filepath.Join(s.dir, histDir)); err != nil {
		return err
	}
	env.hist = true
	return nil
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
// by an operator): its message file, then its changed envelope if it has
// one (a crash in between leaves an orphan in history/, which recovery
// removes). Concurrent removals share one sync (group commit).
func (s *Spool) Remove(env *Envelope) error {
	env.unclaim()
	if err := os.Remove(s.msgPath(env.State, env.ID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if env.State == Corrupt {
		// A corrupt message of the previous format: envelope and body.
		for _, p := range []string{s.v1EnvPath(Corrupt, env.ID), s.v1BodyPath(env.ID)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	if env.hist || env.State == Corrupt {
		if err := os.Remove(s.histPath(env.ID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	// With directory fsyncs, the message's shard of tmp/ too: the rename
	// out of it into incoming/ was never synced, and must not come back.
	dirs := []string{filepath.Join(s.dir, string(env.State)), s.tmpMsgDir(env.ID)}
	if env.hist || env.State == Corrupt {
		dirs = append(dirs, filepath.Join(s.dir, histDir))
	}
	return s.durable(dirs...)
}

// bodyReader is the body part of an open message file.
type bodyReader struct {
	*io.SectionReader
	f *os.File
}

func (b *bodyReader) Close() error { return b.f.Close() }

// openBody opens the body of the message file at path.
func openBody(path string) (io.ReadCloser, int64, error) {
	f, err := openRead(path)
	if err != nil {
		return nil, 0, err
	}
	n, err := bodySize(f)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("message file %s: %w", path, err)
	}
	return &bodyReader{SectionReader: io.NewSectionReader(f, 0, n), f: f}, n, nil
}

// OpenBody opens the message body of id, wherever it is, for reading.
func (s *Spool) OpenBody(id string) (io.ReadCloser, error) {
	r, _, err := s.Body(id)
	return r, err
}

// Body returns a reader over the body of id, wherever it is, and its
// size.
func (s *Spool) Body(id string) (io.ReadCloser, int64, error) {
	st, err := s.Locate(id)
	if err != nil {
		return nil, 0, err
	}
	if st == Corrupt && s.isV1Corrupt(id) {
		return s.openV1Body(id)
	}
	return openBody(s.msgPath(st, id))
}

// BodyOf is Body for a message whose state the caller knows (a delivery
// worker's claimed message): no search, and for a claimed message no open
// either, since Claim kept its file open. The reader may be asked for
// more than once (a retried connection); each reads the body from its
// start.
func (s *Spool) BodyOf(env *Envelope) (io.ReadCloser, int64, error) {
	if f := env.file; f != nil {
		return io.NopCloser(io.NewSectionReader(f, 0, env.bodyLen)), env.bodyLen, nil
	}
	r, n, err := openBody(s.msgPath(env.State, env.ID))
	if errors.Is(err, fs.ErrNotExist) {
		return s.Body(env.ID)
	}
	return r, n, err
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
		id, ok := strings.CutSuffix(n, msgExt)
		if !ok && st == Corrupt {
			id, ok = strings.CutSuffix(n, ".json")
		}
		if ok && ValidID(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// List loads every readable envelope in the given states (all when none
// are given). Messages that vanish while listing (delivered meanwhile) are
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
