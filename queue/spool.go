package queue

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	msgDir = "messages"
	tmpDir = "tmp"
)

// Options tune a Spool.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	// Recover runs crash recovery in Open. Only the process that delivers
	// (serve) may recover; queue commands open a live spool without it.
	Recover bool
	// Existing opens a spool that another process (serve) set up: Open
	// creates no directory and fails if the layout is missing.
	Existing bool
	// FileSync makes Commit fsync the body and the envelope one by one
	// (and then their directories) instead of sharing one filesystem sync
	// among concurrent commits. Both keep the same guarantee; FileSync is
	// slower under load, and is what platforms without syncfs(2) (or
	// Linux before 5.8, whose syncfs does not report write errors) use
	// anyway. The environment variable OAUTHRELAY_SPOOL_SYNC=file sets it
	// too, for benchmarks and for a spool on a filesystem shared with
	// heavy unrelated writers (a syncfs waits for their data as well).
	FileSync bool
}

// Spool is an open spool directory. It is safe for concurrent use, and for
// use by several processes, as long as only one of them recovers.
type Spool struct {
	dir    string
	log    *slog.Logger
	now    func() time.Time
	notify chan string
	sync   *syncer
	// tmpDirs are the shards of tmp/, worked out once in Open.
	tmpDirs []string
	// fs, when not nil, makes every write to the spool's filesystem
	// durable at once (syncfs(2)); commits share it (group commit, see
	// Commit). fsFailed is set once it has reported an error: from then
	// on commits fsync each file, which reports errors per file.
	fs       *syncGroup
	fsFailed atomic.Bool
}

// RecoveryReport says what Open found after a crash.
type RecoveryReport struct {
	RemovedPartial int      // half-written files never acknowledged
	Requeued       []string // interrupted deliveries put back in incoming/
	Corrupt        []string // envelopes moved to corrupt/
}

// Open opens (creating if needed) the spool at dir.
func Open(dir string, o Options) (*Spool, *RecoveryReport, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Spool{dir: dir, log: o.Logger, now: o.Now, notify: make(chan string, 1024)}
	s.sync = newSyncer()
	for _, d := range append(append([]string{msgDir, tmpDir}, tmpShardNames()...), stateNames()...) {
		p := filepath.Join(dir, d)
		if o.Existing {
			// Another process's spool: create nothing (a queue command run
			// as root would leave directories the relay cannot write).
			if _, err := os.Stat(p); err == nil {
				if strings.HasPrefix(d, tmpDir+string(filepath.Separator)) {
					s.tmpDirs = append(s.tmpDirs, p)
				}
				continue
			}
			if strings.HasPrefix(d, tmpDir+string(filepath.Separator)) {
				continue // an older spool without shards: tmp/ itself serves
			}
			return nil, nil, fmt.Errorf("spool %s: %s/ is missing; start `oauthrelay serve` once (as the relay's user) to set the spool up", dir, d)
		}
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, nil, fmt.Errorf("spool %s: cannot create %s: %w", dir, d, err)
		}
		if strings.HasPrefix(d, tmpDir+string(filepath.Separator)) {
			s.tmpDirs = append(s.tmpDirs, p)
		}
	}
	if len(s.tmpDirs) == 0 {
		s.tmpDirs = []string{filepath.Join(dir, tmpDir)}
	}
	if !o.FileSync && os.Getenv("OAUTHRELAY_SPOOL_SYNC") != "file" {
		// The descriptor stays open for the life of the process: syncfs
		// reports the write errors that happened since it was opened.
		if fn := fsSyncer(dir); fn != nil {
			s.fs = newSyncGroup(fn)
		}
	}
	// A spool made by hand or by an older umask may be too open: mail
	// bodies are private.
	if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o077 != 0 {
		s.log.Warn("spool directory is readable by other users", "dir", dir, "mode", st.Mode().Perm().String(), "fix", "chmod 0700 "+dir)
	}
	rep := &RecoveryReport{}
	if o.Recover {
		if err := s.recover(rep); err != nil {
			return nil, nil, err
		}
	}
	return s, rep, nil
}

// tmpShards spreads files being written over several directories. Creating
// a file holds its directory's lock, and on some filesystems (ext4 on a
// virtual disk measured 0.3–0.8 ms per create) one directory caps the
// whole relay at about 1,500 creates a second; concurrent messages now
// create their files in different directories.
const tmpShards = 16

var tmpSeq atomic.Uint32

func tmpShardNames() []string {
	out := make([]string, tmpShards)
	for i := range out {
		out[i] = filepath.Join(tmpDir, fmt.Sprintf("%02d", i))
	}
	return out
}

// partialDirs are the directories files are written in: tmp/ (older
// spools and crash leftovers) and its shards.
func (s *Spool) partialDirs() []string {
	tmp := filepath.Join(s.dir, tmpDir)
	if s.tmpDirs[0] == tmp {
		return s.tmpDirs
	}
	return append([]string{tmp}, s.tmpDirs...)
}

// tmpPath names a file being written, in the next shard of tmp/.
func (s *Spool) tmpPath(name string) string {
	return filepath.Join(s.tmpDirs[tmpSeq.Add(1)%uint32(len(s.tmpDirs))], name)
}

func stateNames() []string {
	out := make([]string, len(States))
	for i, s := range States {
		out[i] = string(s)
	}
	return out
}

// Dir returns the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Notify delivers the id of each newly committed message, so the scheduler
// can attempt it at once without polling.
func (s *Spool) Notify() <-chan string { return s.notify }

func (s *Spool) envPath(st State, id string) string {
	return filepath.Join(s.dir, string(st), id+".json")
}

// BodyPath is where the message body of id is kept.
func (s *Spool) BodyPath(id string) string {
	return filepath.Join(s.dir, msgDir, id+".eml")
}

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

// syncFS waits for a sync of the spool's filesystem that started after the
// call. Its first error switches the spool to fsyncing file by file for
// good: syncfs reports an error once per descriptor, so a later syncfs could
// succeed while data it was meant to cover was lost; every commit waiting
// on the failed sync is refused, and the clients' retries are committed the
// slow, per-file way.
func (s *Spool) syncFS() error {
	err := s.fs.wait()
	if err != nil && s.fsFailed.CompareAndSwap(false, true) {
		s.log.Error("spool: syncing the filesystem failed; fsyncing each file from now on", "dir", s.dir, "error", err.Error(),
			"fix", "check the disk and the kernel log (dmesg); restart the relay once the filesystem is healthy")
	}
	if err == nil && s.fsFailed.Load() {
		// A sync that succeeded after another failed proves nothing.
		err = errors.New("an earlier sync of the spool filesystem failed")
	}
	return err
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

// grouped reports whether commits and state changes share filesystem syncs
// (syncfs) instead of fsyncing each file and directory.
func (s *Spool) grouped() bool { return s.fs != nil && !s.fsFailed.Load() }

// durable makes the renames and removals done so far in dirs durable: one
// shared filesystem sync when grouped, else an fsync of each directory.
func (s *Spool) durable(dirs ...string) error {
	if s.grouped() {
		return s.syncFS()
	}
	return s.sync.dirs(dirs...)
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

// recover puts the spool back into a consistent state after a crash.
func (s *Spool) recover(rep *RecoveryReport) error {
	tmp := filepath.Join(s.dir, tmpDir)
	for _, d := range s.partialDirs() {
		ents, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			if os.Remove(filepath.Join(d, e.Name())) == nil {
				rep.RemovedPartial++
			}
		}
	}
	known := map[string]bool{}
	for _, st := range States {
		ids, err := s.IDs(st)
		if err != nil {
			return err
		}
		for _, id := range ids {
			known[id] = true
			if st == Corrupt {
				continue
			}
			e, lerr := s.Load(st, id)
			if lerr == nil {
				if fi, serr := os.Stat(s.BodyPath(id)); serr != nil {
					lerr = fmt.Errorf("its message body %s is missing", s.BodyPath(id))
				} else if fi.Size() != e.Size {
					lerr = fmt.Errorf("its message body has %d bytes, the envelope says %d", fi.Size(), e.Size)
				}
			}
			if lerr != nil {
				s.log.Error("spool: unreadable envelope moved to corrupt/ for a person to inspect", "id", id, "state", st, "error", lerr.Error(),
					"fix", "inspect "+filepath.Join(s.dir, string(Corrupt), id+".json")+"; fix it and move it to incoming/, or delete it")
				if err := os.Rename(s.envPath(st, id), s.envPath(Corrupt, id)); err != nil {
					return err
				}
				rep.Corrupt = append(rep.Corrupt, id)
				continue
			}
			if st == Active {
				if err := s.Move(e, Incoming); err != nil {
					return err
				}
				rep.Requeued = append(rep.Requeued, id)
			}
		}
	}
	bodies, err := os.ReadDir(filepath.Join(s.dir, msgDir))
	if err != nil {
		return err
	}
	for _, b := range bodies {
		id, ok := strings.CutSuffix(b.Name(), ".eml")
		if !ok || !known[id] {
			if os.Remove(filepath.Join(s.dir, msgDir, b.Name())) == nil {
				rep.RemovedPartial++
			}
		}
	}
	if rep.RemovedPartial > 0 || len(rep.Requeued) > 0 || len(rep.Corrupt) > 0 {
		s.log.Info("spool recovered after an unclean stop", "removed_unacknowledged", rep.RemovedPartial, "requeued", len(rep.Requeued), "corrupt", len(rep.Corrupt))
	}
	return s.sync.dirs(append([]string{tmp, filepath.Join(s.dir, msgDir)}, s.stateDirs()...)...)
}

func (s *Spool) stateDirs() []string {
	out := make([]string, len(States))
	for i, st := range States {
		out[i] = filepath.Join(s.dir, string(st))
	}
	return out
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

// syncer fsyncs directories. Concurrent commits that need the same
// directory share one fsync (group commit): whoever arrives while a sync is
// running waits for the next one, which covers every rename made before it
// started.
type syncer struct {
	mu sync.Mutex
	m  map[string]*syncGroup
}

// syncGroup runs one sync function for many waiters (group commit).
type syncGroup struct {
	fn      func() error
	mu      sync.Mutex
	cond    *sync.Cond
	running bool
	gen     uint64 // incremented when a sync starts
	done    uint64 // the last generation finished
	err     error
}

func newSyncGroup(fn func() error) *syncGroup {
	g := &syncGroup{fn: fn}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func newSyncer() *syncer { return &syncer{m: map[string]*syncGroup{}} }

func (y *syncer) dirs(paths ...string) error {
	var first error
	for _, p := range paths {
		if err := y.dir(p); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (y *syncer) dir(path string) error {
	y.mu.Lock()
	d := y.m[path]
	if d == nil {
		d = newSyncGroup(func() error { return syncDir(path) })
		y.m[path] = d
	}
	y.mu.Unlock()
	return d.wait()
}

// wait returns the result of a run of fn that started after wait was
// called. The caller that finds no run going starts one and shares its
// result with everyone who arrived meanwhile.
func (d *syncGroup) wait() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	// A sync that is running may have started before our write: we need
	// one that starts after now.
	need := d.gen + 1
	for d.done < need {
		if !d.running {
			d.running = true
			d.gen++
			gen := d.gen
			d.mu.Unlock()
			err := d.fn()
			d.mu.Lock()
			d.running = false
			d.done = gen
			d.err = err
			d.cond.Broadcast()
			return err // this run started after we came: it is ours
		}
		d.cond.Wait()
	}
	return d.err
}

// PartialFiles lists the files being written right now (under tmp/). Once
// no message is in flight it should be empty: anything left is a
// half-written file that recovery removes.
func (s *Spool) PartialFiles() ([]string, error) {
	var out []string
	for _, d := range s.partialDirs() {
		ents, err := os.ReadDir(d)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if !e.IsDir() {
				out = append(out, filepath.Join(d, e.Name()))
			}
		}
	}
	return out, nil
}
