package queue

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// commitOne commits a small message and returns its id.
func commitOne(t *testing.T, s *Spool) (string, error) {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	env := &Envelope{Client: "erp", Mailbox: "helpdesk@contoso.com", MailFrom: "noreply@contoso.com",
		Recipients: []*Recipient{{Address: "a@example.com"}}}
	return w.ID(), w.Commit(env)
}

// TestCommitSyncPaths: a commit alone fsyncs its own file (and its tmp/
// shard where the filesystem does not cover the new entry); a commit while
// another is syncing shares the filesystem sync; a failed shared sync
// refuses the commit and switches the spool to per-file syncs for good.
func TestCommitSyncPaths(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range s.Notify() {
		}
	}()
	syncs := 0
	var fail error
	s.fs = newSyncGroup(func() error { syncs++; return fail })

	for _, covered := range []bool{true, false} {
		s.entryWithFile = covered
		id, err := commitOne(t, s)
		if err != nil {
			t.Fatal(err)
		}
		if syncs != 0 {
			t.Errorf("entryWithFile=%v: a lone commit synced the filesystem", covered)
		}
		g := s.sync.m[s.tmpMsgDir(id)]
		if dirSynced := g != nil && g.done > 0; dirSynced == covered {
			t.Errorf("entryWithFile=%v: tmp/ shard fsynced = %v", covered, dirSynced)
		}
		delete(s.sync.m, s.tmpMsgDir(id))
		if _, err := os.Stat(s.msgPath(Incoming, id)); err != nil {
			t.Errorf("entryWithFile=%v: the message is not in incoming/: %v", covered, err)
		}
	}

	// Another commit is between its write and its sync: share.
	s.syncing.Add(1)
	if _, err := commitOne(t, s); err != nil {
		t.Fatal(err)
	}
	if syncs != 1 {
		t.Errorf("a commit beside another ran %d filesystem syncs, want 1", syncs)
	}

	fail = errors.New("I/O error")
	id, err := commitOne(t, s)
	var we *WriteError
	if !errors.As(err, &we) || we.ID != id {
		t.Fatalf("commit with a failing filesystem sync: %v, want a WriteError for %s", err, id)
	}
	if _, err := os.Stat(s.msgPath(Incoming, id)); err == nil {
		t.Error("a refused message is in incoming/")
	}
	if left, _ := s.PartialFiles(); len(left) != 0 {
		t.Errorf("a refused commit left %v", left)
	}
	if !s.fsFailed.Load() {
		t.Fatal("a failed filesystem sync did not switch the spool to per-file syncs")
	}
	// Still beside another commit, but per file now: no shared sync.
	if _, err := commitOne(t, s); err != nil {
		t.Fatalf("per-file commit after the failure: %v", err)
	}
	if syncs != 2 {
		t.Errorf("after the failure a commit ran the filesystem sync again (%d syncs)", syncs)
	}
	s.syncing.Add(-1)
}

// TestPooledEntryDurableBeforeUse: the pool syncs a shard's directory
// before it offers the files it made there, so a message written into a
// pooled file needs only its own fsync, on any filesystem (not only where
// the file's fsync covers a new entry).
func TestPooledEntryDurableBeforeUse(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	synced := map[string]bool{}
	hook := func(d string) error {
		// Other tests' spools may still be filling their pools.
		if strings.HasPrefix(d, dir+string(filepath.Separator)) {
			mu.Lock()
			synced[d] = true
			mu.Unlock()
		}
		return syncDir(d)
	}
	poolSyncDir.Store(&hook)
	t.Cleanup(func() { poolSyncDir.Store(nil) })
	s, _, err := Open(dir, Options{Logger: testLog(t), Recover: true, Precreate: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	go func() {
		for range s.Notify() {
		}
	}()
	// Offered, not only on disk: a shard's files are offered once its
	// directory is synced.
	testkit.Eventually(t, "the pool filled and offered", func() bool {
		s.pool.mu.Lock()
		defer s.pool.mu.Unlock()
		n := 0
		for _, paths := range s.pool.idle {
			n += len(paths)
		}
		return n == tmpShards*poolDepth
	})
	mu.Lock()
	if len(synced) != tmpShards {
		t.Errorf("the pool synced %d of %d shard directories before offering their files", len(synced), tmpShards)
	}
	mu.Unlock()
	s.entryWithFile = false
	s.fs = nil           // per-file syncs, as on a filesystem without syncfs
	s.sync = newSyncer() // forget recovery's directory syncs
	id, err := commitOne(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if g := s.sync.m[s.tmpMsgDir(id)]; g != nil && g.done > 0 {
		t.Error("a commit into a pooled file fsynced its shard again")
	}
	// A file Create makes itself still gets its directory synced.
	for _, f := range poolFiles(t, dir) {
		os.Remove(f)
	}
	s.pool.close()
	id, err = commitOne(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if g := s.sync.m[s.tmpMsgDir(id)]; g == nil || g.done == 0 {
		t.Error("a commit into a file Create made did not fsync its shard")
	}
}
