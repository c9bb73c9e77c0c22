package queue

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// WriteError is a failure to write the spool; the message was not queued.
type WriteError struct {
	ID  string
	Op  string
	Err error
}

// Error says which step failed for which message.
func (e *WriteError) Error() string {
	return fmt.Sprintf("spool: %s for %s: %v", e.Op, e.ID, e.Err)
}

// Unwrap returns the operating system's error.
func (e *WriteError) Unwrap() error { return e.Err }

// IsFull reports whether err is the disk (or quota) being full.
func IsFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Writer receives one message body. Nothing is acknowledged until Commit
// returns nil.
type Writer struct {
	s    *Spool
	id   string
	f    *os.File
	bw   *bufio.Writer
	n    int64
	err  error
	done bool
}

// Create starts a new message and assigns its id.
func (s *Spool) Create() (*Writer, error) {
	id := NewID(s.now())
	f, err := os.OpenFile(s.tmpPath(id+".eml"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, &WriteError{ID: id, Op: "create body", Err: err}
	}
	bw := bodyBufs.Get().(*bufio.Writer)
	bw.Reset(f)
	return &Writer{s: s, id: id, f: f, bw: bw}, nil
}

// bodyBufs recycles the 64 KiB body buffers: one per message would be most
// of the garbage the relay makes under load.
var bodyBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}

// release returns the body buffer to the pool once nothing more is
// written through it.
func (w *Writer) release() {
	if w.bw != nil {
		w.bw.Reset(nil)
		bodyBufs.Put(w.bw)
		w.bw = nil
	}
}

// ID is the queue id the message will have.
func (w *Writer) ID() string { return w.id }

// Write appends body bytes.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.bw == nil {
		return 0, errors.New("spool: write after commit or abort")
	}
	n, err := w.bw.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = &WriteError{ID: w.id, Op: "write body", Err: err}
		return n, w.err
	}
	return n, nil
}

// Abort throws the message away; it was never acknowledged.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.release()
	w.f.Close()
	os.Remove(w.f.Name())
}

// Commit makes the message durable with env as its envelope and puts it in
// incoming/. When Commit returns nil, the body and envelope are fsynced and
// renamed into place and both directories are fsynced: the message survives
// a crash or power loss, and the relay may answer 250.
func (w *Writer) Commit(env *Envelope) (err error) {
	if w.done {
		return errors.New("spool: message already committed or aborted")
	}
	defer func() {
		if err != nil {
			w.Abort()
		}
	}()
	if w.err != nil {
		return w.err
	}
	s := w.s
	env.ID = w.id
	env.Size = w.n
	if env.Received.IsZero() {
		env.Received = s.now()
	}
	if env.NextAttempt.IsZero() {
		env.NextAttempt = env.Received
	}
	for _, r := range env.Recipients {
		if r.State == "" {
			r.State = RcptPending
		}
	}
	if err := w.bw.Flush(); err != nil {
		return &WriteError{ID: w.id, Op: "write body", Err: err}
	}
	w.release()
	// Group commit: with syncfs, the files are written without their own
	// fsync and one sync of the filesystem, shared by every commit that
	// reached this point meanwhile, makes them all durable; a second shared
	// sync does the same for the renames. Under load the second sync of
	// one batch is the first of the next, so a batch of messages costs
	// about one journal commit instead of two fsyncs per message plus two
	// per directory. The guarantee is unchanged: the 250 waits for a
	// sync that started after the renames, and the renames wait for one
	// that started after the data was written, so a crash never leaves a
	// renamed file without its data.
	grouped := s.grouped()
	if !grouped {
		if err := w.f.Sync(); err != nil {
			return &WriteError{ID: w.id, Op: "fsync body", Err: err}
		}
	}
	if err := w.f.Close(); err != nil {
		return &WriteError{ID: w.id, Op: "close body", Err: err}
	}
	b, err := Encode(env)
	if err != nil {
		return &WriteError{ID: w.id, Op: "encode envelope", Err: err}
	}
	tmpEnv := s.tmpPath(w.id + ".json")
	if err := writeFile(tmpEnv, b, !grouped); err != nil {
		os.Remove(tmpEnv)
		return &WriteError{ID: w.id, Op: "write envelope", Err: err}
	}
	if grouped {
		if err := s.syncFS(); err != nil {
			os.Remove(tmpEnv)
			return &WriteError{ID: w.id, Op: "sync spool (body and envelope)", Err: err}
		}
	}
	// Body first: an envelope in a state directory always has its body. A
	// crash between the two renames leaves an orphan body, which recovery
	// removes (it was never acknowledged).
	if err := os.Rename(w.f.Name(), s.BodyPath(w.id)); err != nil {
		os.Remove(tmpEnv)
		return &WriteError{ID: w.id, Op: "rename body", Err: err}
	}
	if err := os.Rename(tmpEnv, s.envPath(Incoming, w.id)); err != nil {
		os.Remove(tmpEnv)
		os.Remove(s.BodyPath(w.id))
		return &WriteError{ID: w.id, Op: "rename envelope", Err: err}
	}
	if grouped {
		err = s.syncFS()
	} else {
		err = s.sync.dirs(filepath.Join(s.dir, msgDir), filepath.Join(s.dir, string(Incoming)))
	}
	if err != nil {
		// The renames happened but may not be on disk: we cannot promise
		// durability, so refuse. The files stay and will be delivered; a
		// duplicate after the client retries is better than a loss.
		return &WriteError{ID: w.id, Op: "fsync directory", Err: err}
	}
	w.done = true
	env.State = Incoming
	select {
	case s.notify <- w.id:
	default:
	}
	return nil
}

// writeFile writes b to a new file at path, fsyncing it when sync is set.
func writeFile(path string, b []byte, sync bool) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
