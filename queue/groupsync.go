package queue

import (
	"errors"
	"sync"
)

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
