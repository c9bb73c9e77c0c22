package queue

import (
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// msgDir held message bodies in the previous spool format; recovery
	// migrates them (see migrate.go).
	msgDir = "messages"
	tmpDir = "tmp"
	// histDir holds the envelope of a message as changed since it was
	// accepted (attempts, recipients' states, next attempt), written only
	// when it changes: after a failed attempt, a partial delivery or an
	// operator's action. A message delivered at its first attempt never
	// has one.
	histDir = "history"
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
	// FileSync makes Commit fsync the message file (and its tmp/ shard,
	// unless the filesystem makes the new entry durable with the file)
	// one by one instead of sharing one filesystem sync among concurrent
	// commits. Both keep the same guarantee; FileSync is
	// slower under load, and is what platforms without syncfs(2) (or
	// Linux before 5.8, whose syncfs does not report write errors) use
	// anyway. The environment variable OAUTHRELAY_SPOOL_SYNC=file sets it
	// too, for benchmarks and for a spool on a filesystem shared with
	// heavy unrelated writers (a syncfs waits for their data as well).
	FileSync bool
	// Precreate keeps a few empty message files ready in tmp/ so that
	// accepting a message does not wait for its file to be created (see
	// filePool). Only the process that accepts mail (serve) sets it; Close
	// removes the files.
	Precreate bool
}

// Spool is an open spool directory. It is safe for concurrent use, and for
// use by several processes, as long as only one of them recovers.
type Spool struct {
	dir    string
	log    *slog.Logger
	now    func() time.Time
	notify chan *Envelope
	sync   *syncer
	// tmpDirs are the shards of tmp/, worked out once in Open.
	tmpDirs []string
	// fs, when not nil, makes every write to the spool's filesystem
	// durable at once (syncfs(2)); commits share it (group commit, see
	// Commit). fsFailed is set once it has reported an error: from then
	// on commits fsync each file, which reports errors per file.
	fs       *syncGroup
	fsFailed atomic.Bool
	// syncing counts commits between their last write and the end of
	// their sync: a commit that finds no other fsyncs its own file
	// instead of the whole filesystem (see Commit).
	syncing atomic.Int32
	// entryWithFile is set when the spool's filesystem makes a new file's
	// directory entry durable with the file's fsync (fsyncCoversNewEntry).
	entryWithFile bool
	// alwaysShare sends even a lone commit to syncfs, as before the
	// per-file fast path: benchmarks set it to compare the two.
	alwaysShare bool
	// recovered are envelopes recovery read, until the scheduler takes
	// them (TakeRecovered).
	recoveredMu sync.Mutex
	recovered   []*Envelope
	// pool holds message files created ahead of need (Options.Precreate).
	pool *filePool
}

// Open opens (creating if needed) the spool at dir.
func Open(dir string, o Options) (*Spool, *RecoveryReport, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Spool{dir: dir, log: o.Logger, now: o.Now, notify: make(chan *Envelope, 1024)}
	s.sync = newSyncer()
	for _, d := range append(append([]string{tmpDir, histDir}, tmpShardNames()...), stateNames()...) {
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
			if strings.HasPrefix(d, tmpDir+string(filepath.Separator)) || d == histDir {
				continue // an older spool, until serve recovers it: tmp/ itself serves
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
	s.entryWithFile = fsyncCoversNewEntry(s.tmpDirs[0])
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
	if o.Precreate && !o.Existing {
		// After recovery, which would take the new files for leftovers.
		s.pool = newFilePool(s.tmpDirs)
	}
	return s, rep, nil
}

// Close removes the message files made ahead of need (Options.Precreate)
// and stops making them. Messages being written are not affected; the
// spool stays usable, creating each message's file when it starts.
func (s *Spool) Close() error {
	s.pool.close()
	return nil
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

// tmpPath names a file being written, in the next shard of tmp/.
func (s *Spool) tmpPath(name string) string {
	return filepath.Join(s.tmpDirs[tmpSeq.Add(1)%uint32(len(s.tmpDirs))], name)
}

// tmpMsgDir is the shard of tmp/ a message file is written in: fixed by
// its id, so that removing the message can sync that directory too when
// the spool fsyncs directories one by one (the rename out of it was never
// synced on its own).
func (s *Spool) tmpMsgDir(id string) string {
	h := crc32.ChecksumIEEE([]byte(id))
	return s.tmpDirs[h%uint32(len(s.tmpDirs))]
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

// Probe creates, writes and removes a file where messages are written
// (tmp/), to show that the spool takes mail right now; readiness checks
// call it. A probe file a crash leaves behind is removed by recovery.
func (s *Spool) Probe() error {
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "readyz-*.probe")
	if err != nil {
		return err
	}
	name := f.Name()
	if _, err := f.Write([]byte("ok\n")); err != nil {
		f.Close()
		os.Remove(name)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return err
	}
	return os.Remove(name)
}

// Notify delivers the envelope of each newly committed message, so the
// scheduler can attempt it at once, without polling and without reading
// back what was just written. Receivers must not change it.
func (s *Spool) Notify() <-chan *Envelope { return s.notify }

// msgPath is where the message file of id is kept in state st.
func (s *Spool) msgPath(st State, id string) string {
	return filepath.Join(s.dir, string(st), id+msgExt)
}

// histPath is where the changed envelope of id is kept.
func (s *Spool) histPath(id string) string {
	return filepath.Join(s.dir, histDir, id+".json")
}

// MessagePath returns the file that holds message id (its body, then its
// envelope as accepted), wherever it is, for an operator to read.
func (s *Spool) MessagePath(id string) (string, error) {
	st, err := s.Locate(id)
	if err != nil {
		return "", err
	}
	if st == Corrupt && s.isV1Corrupt(id) {
		return s.v1EnvPath(Corrupt, id), nil
	}
	return s.msgPath(st, id), nil
}
