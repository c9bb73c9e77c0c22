package queue

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// poolExt ends the name of a message file created ahead of need. Empty, it
// is no message; once written and whole (its footer holds), the envelope
// in it names the message, and recovery treats it as a whole message file.
const poolExt = ".pool"

// poolDepth is how many empty files each shard of tmp/ keeps ready: enough
// for a burst of concurrent messages while the refiller catches up.
const poolDepth = 4

// filePool keeps empty message files created in advance in each shard of
// tmp/, so that Create, which runs between the client's DATA and its final
// dot, finds its file made: creating one (an inode and a directory entry)
// took 0.15-1.2 ms (median) at 200 messages a second on a busy ext4, on
// the path to the 250; opening a ready one takes 0.03-0.06 ms. Postfix
// creates its queue file at MAIL FROM for the same reason. The files are
// empty (no disk blocks), so a full disk still refuses mail at the same
// point; the empty files a crash leaves are removed by recovery, which
// treats one a message was being written into like any message file.
type filePool struct {
	mu     sync.Mutex
	idle   map[string][]string // paths, by shard directory
	names  map[string]bool     // paths of the idle files and those being made
	closed bool
	refill chan string
	done   chan struct{}
	wg     sync.WaitGroup
}

// newFilePool fills every shard in dirs and keeps them filled until close.
func newFilePool(dirs []string) *filePool {
	p := &filePool{
		idle:   make(map[string][]string, len(dirs)),
		names:  make(map[string]bool, len(dirs)*poolDepth),
		refill: make(chan string, len(dirs)*poolDepth),
		done:   make(chan struct{}),
	}
	for _, d := range dirs {
		p.refill <- d
	}
	p.wg.Add(1)
	go p.run()
	return p
}

// run tops up the shards it is told about.
func (p *filePool) run() {
	defer p.wg.Done()
	for {
		select {
		case <-p.done:
			return
		case dir := <-p.refill:
			p.fill(dir)
		}
	}
}

// poolSyncDir, when set, replaces syncDir for the pool's directory syncs
// (tests count them; atomic, as other tests' pools may be filling).
var poolSyncDir atomic.Pointer[func(string) error]

// syncPoolDir makes a shard's new entries durable.
func syncPoolDir(dir string) error {
	if f := poolSyncDir.Load(); f != nil {
		return (*f)(dir)
	}
	return syncDir(dir)
}

// fill creates files in dir until it holds poolDepth, then syncs dir
// before offering them: a message written into a pooled file then needs
// only its own fsync to be found after a crash, on any filesystem (its
// name was durable before the message came). A failure (a full disk, no
// inode left, a failed directory sync) leaves the shard short until the
// next message in it asks again (topUp): Create then makes its file itself
// and reports any error to the client.
func (p *filePool) fill(dir string) {
	var made []string
	defer func() {
		err := error(nil)
		if len(made) > 0 {
			err = syncPoolDir(dir)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, path := range made {
			if err != nil || p.closed {
				delete(p.names, path)
				os.Remove(path)
				continue
			}
			p.idle[dir] = append(p.idle[dir], path)
		}
	}()
	for {
		p.mu.Lock()
		short := !p.closed && len(p.idle[dir])+len(made) < poolDepth
		p.mu.Unlock()
		if !short {
			return
		}
		var r [8]byte
		_, _ = rand.Read(r[:])
		path := filepath.Join(dir, hex.EncodeToString(r[:])+poolExt)
		// Known before it exists, so that PartialFiles never sees it
		// as a message being written.
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		p.names[path] = true
		p.mu.Unlock()
		f, err := createExcl(path)
		if err == nil {
			// Not kept open: an idle descriptor open for writing would
			// keep the filesystem from being remounted read-only.
			err = f.Close()
		}
		if err != nil {
			p.mu.Lock()
			delete(p.names, path)
			p.mu.Unlock()
			os.Remove(path)
			return
		}
		made = append(made, path)
	}
}

// take opens an empty file in dir for writing, or returns nil when the
// shard has none ready (or p is nil). Opening an existing file costs a
// path lookup, not the inode and directory entry a create makes (and
// openWrite spares the poller's four calls). A file
// someone deleted by hand is skipped.
func (p *filePool) take(dir string) *os.File {
	if p == nil {
		return nil
	}
	for {
		p.mu.Lock()
		paths := p.idle[dir]
		if p.closed || len(paths) == 0 {
			p.mu.Unlock()
			return nil
		}
		path := paths[len(paths)-1]
		p.idle[dir] = paths[:len(paths)-1]
		delete(p.names, path)
		p.mu.Unlock()
		f, err := openWrite(path)
		if err == nil {
			return f
		}
		if !errors.Is(err, fs.ErrNotExist) {
			// Still there but not writable now (a read-only remount):
			// it stays in the pool, and Create makes its own file, whose
			// failure it reports.
			p.mu.Lock()
			closed := p.closed
			if !closed {
				p.idle[dir] = append(p.idle[dir], path)
				p.names[path] = true
			}
			p.mu.Unlock()
			if closed {
				os.Remove(path)
			}
			return nil
		}
	}
}

// topUp asks for dir to be filled again. Writers call it once their
// message is committed or aborted, not when they take the file: a create
// in the shard while the commit syncs it would compete with that sync.
func (p *filePool) topUp(dir string) {
	if p == nil {
		return
	}
	select {
	case p.refill <- dir:
	default: // a refill of this shard is queued already, or many are
	}
}

// isIdle reports whether path is a file waiting in the pool.
func (p *filePool) isIdle(path string) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.names[path]
}

// close stops the refills and removes the files still waiting.
func (p *filePool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	var left []string
	for _, paths := range p.idle {
		left = append(left, paths...)
	}
	p.idle, p.names = nil, map[string]bool{}
	p.mu.Unlock()
	close(p.done)
	p.wg.Wait()
	for _, path := range left {
		os.Remove(path)
	}
}

// isPoolFile reports whether name is a file the pool created.
func isPoolFile(name string) bool { return strings.HasSuffix(name, poolExt) }
