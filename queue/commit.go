package queue

import (
	"bufio"
	"errors"
	"fmt"
	"hash/crc32"
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
	crc  uint32
	err  error
	done bool
	// pooled: the file came from the pool, whose directory entry was
	// synced before it was offered.
	pooled bool
}

// Create starts a new message and assigns its id.
func (s *Spool) Create() (*Writer, error) {
	id := NewID(s.now())
	dir := s.tmpMsgDir(id)
	// A file made ahead of need in the same shard keeps the sync and
	// removal paths keyed by id: only its name differs.
	f := s.pool.take(dir)
	pooled := f != nil
	if f == nil {
		var err error
		f, err = createExcl(filepath.Join(dir, id+msgExt))
		if err != nil {
			return nil, &WriteError{ID: id, Op: "create message file", Err: err}
		}
	}
	bw := bodyBufs.Get().(*bufio.Writer)
	bw.Reset(f)
	return &Writer{s: s, id: id, f: f, bw: bw, pooled: pooled}, nil
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
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
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
	w.refill()
}

// refill lets the pool replace the file this message took from its
// shard. Asked after every message, not only one that got a pooled file:
// a shard the pool left empty (a failed fill, files removed by hand)
// would otherwise never be filled again.
func (w *Writer) refill() {
	w.s.pool.topUp(w.s.tmpMsgDir(w.id))
}

// Commit makes the message durable with env as its envelope and puts it in
// incoming/. When Commit returns nil the message file (body, envelope and
// the footer that marks it whole) is on disk, so the message survives a
// crash or power loss, and the relay may answer 250.
//
// The file is written once, in tmp/, and one sync covers its data and its
// directory entry (see commitSync): under load that sync is a syncfs
// shared by every commit that reached it meanwhile (group commit), so a
// batch of messages costs one journal commit. The rename into incoming/
// comes after the sync and is not waited for: a crash that loses it leaves a whole file in
// tmp/, which recovery moves into incoming/ (see recover).
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
	js, err := Encode(env)
	if err != nil {
		return &WriteError{ID: w.id, Op: "encode envelope", Err: err}
	}
	// Envelope and footer go out in the same write as the end of the
	// body (usually all of it): one write per message.
	trailer := appendTrailer(make([]byte, 0, len(js)+maxFooter), js, w.n, w.crc)
	if _, err := w.bw.Write(trailer); err != nil {
		return &WriteError{ID: w.id, Op: "write message file", Err: err}
	}
	if err := w.bw.Flush(); err != nil {
		return &WriteError{ID: w.id, Op: "write message file", Err: err}
	}
	w.release()
	failpoint("commit-before-sync")
	if err := s.commitSync(w.f, s.tmpMsgDir(w.id), w.pooled); err != nil {
		return &WriteError{ID: w.id, Op: "sync spool", Err: err}
	}
	if err := w.f.Close(); err != nil {
		return &WriteError{ID: w.id, Op: "close message file", Err: err}
	}
	failpoint("commit-after-sync")
	if err := rename(w.f.Name(), s.msgPath(Incoming, w.id)); err != nil {
		// The message is durable in tmp/ but could not be queued: refuse,
		// and remove it (should the removal be lost in a crash, recovery
		// delivers it; a duplicate after the client's retry is better
		// than a loss).
		return &WriteError{ID: w.id, Op: "rename message file into incoming/", Err: err}
	}
	w.done = true
	w.refill()
	env.State = Incoming
	select {
	case s.notify <- env:
	default:
	}
	return nil
}

// commitSync makes the written message file f and its entry in dir
// durable. A commit alone (no other between its write and its sync) fsyncs
// its own file, plus dir unless the entry is durable already
// (entryDurable: a pooled file, whose entry was synced before it was
// offered) or the filesystem covers a new entry with the file's fsync:
// at low load that is one small sync, where syncfs would
// also wait for every other writer's dirty data on the filesystem. When
// others are syncing, it joins the shared syncfs (group commit). Both keep
// the same guarantee; so does the per-file mode (FileSync, or after a
// syncfs error).
func (s *Spool) commitSync(f *os.File, dir string, entryDurable bool) error {
	alone := s.syncing.Add(1) == 1
	defer s.syncing.Add(-1)
	if s.grouped() && (!alone || s.alwaysShare) {
		return s.syncFS()
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if entryDurable || s.entryWithFile {
		return nil
	}
	// The file's entry in tmp/ must be durable too: recovery finds the
	// message there if the rename into incoming/ is lost.
	return s.sync.dirs(dir)
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
