package queue

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// poolFiles lists the files made ahead of need under dir's tmp/.
func poolFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, f := range filesUnder(t, filepath.Join(dir, tmpDir)) {
		if strings.HasSuffix(f, poolExt) {
			out = append(out, f)
		}
	}
	return out
}

// TestPrecreate: the spool keeps empty files ready in every shard, commits
// take them (the message ends up in incoming/ under its id), they are not
// partial files, and Close removes them.
func TestPrecreate(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t), Recover: true, Precreate: true})
	if err != nil {
		t.Fatal(err)
	}
	full := tmpShards * poolDepth
	testkit.Eventually(t, "the pool filled", func() bool { return len(poolFiles(t, dir)) == full })
	if left, err := s.PartialFiles(); err != nil || len(left) != 0 {
		t.Errorf("PartialFiles counts the pool: %v %v", left, err)
	}
	before := poolFiles(t, dir)
	var ids []string
	for i := 0; i < 40; i++ {
		ids = append(ids, commit(t, s, "Subject: pooled\r\n\r\nbody\r\n").ID)
	}
	for _, id := range ids {
		env, err := s.Load(Incoming, id)
		if err != nil || env.Size != int64(len("Subject: pooled\r\n\r\nbody\r\n")) {
			t.Fatalf("message %s: %v %+v", id, err, env)
		}
	}
	used := 0
	for _, f := range before {
		if _, err := os.Stat(f); os.IsNotExist(err) {
			used++
		}
	}
	if used == 0 {
		t.Error("no commit took a file from the pool")
	}
	// An aborted message removes its pooled file.
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	name := w.f.Name()
	w.Abort()
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Errorf("the aborted message's file %s is still there: %v", name, err)
	}
	testkit.Eventually(t, "the pool refilled", func() bool { return len(poolFiles(t, dir)) == full })
	if left, err := s.PartialFiles(); err != nil || len(left) != 0 {
		t.Errorf("PartialFiles after the commits: %v %v", left, err)
	}
	s.Close()
	if left := filesUnder(t, filepath.Join(dir, tmpDir)); len(left) != 0 {
		t.Errorf("Close left %v", left)
	}
	// Closed, the spool still takes mail, creating each file itself.
	commit(t, s, "Subject: after close\r\n\r\n")
	if left := filesUnder(t, filepath.Join(dir, tmpDir)); len(left) != 0 {
		t.Errorf("a commit after Close left %v", left)
	}
}

// TestRecoverPoolFiles: after a crash, an empty pooled file is removed
// without being reported, a whole message written into one is queued under
// its envelope's id, and a half-written one is removed as unacknowledged.
func TestRecoverPoolFiles(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t), Recover: true})
	if err != nil {
		t.Fatal(err)
	}
	whole := commit(t, s, "Subject: whole\r\n\r\nbody\r\n")
	b, err := os.ReadFile(s.msgPath(Incoming, whole.ID))
	if err != nil {
		t.Fatal(err)
	}
	// The crash came between the sync and the rename into incoming/.
	if err := os.Remove(s.msgPath(Incoming, whole.ID)); err != nil {
		t.Fatal(err)
	}
	shard := s.tmpMsgDir(whole.ID)
	for name, content := range map[string][]byte{
		"0000000000000001" + poolExt: b,
		"0000000000000002" + poolExt: nil,
		"0000000000000003" + poolExt: b[:len(b)-5],
	} {
		if err := os.WriteFile(filepath.Join(shard, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2, rep, err := Open(dir, Options{Logger: testLog(t), Recover: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Committed) != 1 || rep.Committed[0] != whole.ID {
		t.Errorf("committed from tmp/ %v, want [%s]", rep.Committed, whole.ID)
	}
	if rep.RemovedPartial != 1 {
		t.Errorf("removed %d partial files, want 1 (the half-written one; the empty one is no message)", rep.RemovedPartial)
	}
	if env, err := s2.Load(Incoming, whole.ID); err != nil || env.Size != whole.Size {
		t.Errorf("the whole message after recovery: %v %+v", err, env)
	}
	if left := filesUnder(t, filepath.Join(dir, tmpDir)); len(left) != 0 {
		t.Errorf("recovery left %v", left)
	}
}

// TestPrecreateFilesRemovedByHand: pooled files someone deleted are not
// handed out (a message written into one could not be queued); Create
// makes its own file instead.
func TestPrecreateFilesRemovedByHand(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t), Recover: true, Precreate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testkit.Eventually(t, "the pool filled", func() bool { return len(poolFiles(t, dir)) == tmpShards*poolDepth })
	for _, f := range poolFiles(t, dir) {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	env := commit(t, s, "Subject: after rm\r\n\r\nbody\r\n")
	if _, err := s.Load(Incoming, env.ID); err != nil {
		t.Fatalf("the message after the pool was deleted: %v", err)
	}
	// A shard left empty (files removed by hand, or a failed fill: too
	// many open files, no inode left) is filled again after the next
	// message in it, not left empty for good.
	shard := s.tmpMsgDir(env.ID)
	testkit.Eventually(t, "the emptied shard refilled", func() bool {
		n := 0
		for _, f := range poolFiles(t, dir) {
			if filepath.Dir(f) == shard {
				n++
			}
		}
		return n == poolDepth
	})
}
