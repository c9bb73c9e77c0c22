package queue

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestStateFiles: a state file round-trips, is replaced whole, lives at
// state/<name> (where releases before the API kept it) with mode 0600,
// and leaves nothing in tmp/; an absent one reads as fs.ErrNotExist.
func TestStateFiles(t *testing.T) {
	for _, fileSync := range []bool{false, true} {
		dir := t.TempDir()
		s, _, err := Open(dir, Options{Logger: testLog(t), FileSync: fileSync})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.LoadState("recipients-24h.json"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("FileSync=%v: LoadState of a file never saved: %v, want fs.ErrNotExist", fileSync, err)
		}
		for _, content := range []string{`{"a@contoso.com":[{"at":"2026-01-01T00:00:00Z","n":3}]}` + "\n", "{}\n"} {
			if err := s.SaveState("recipients-24h.json", []byte(content)); err != nil {
				t.Fatalf("FileSync=%v: %v", fileSync, err)
			}
			got, err := s.LoadState("recipients-24h.json")
			if err != nil || string(got) != content {
				t.Fatalf("FileSync=%v: LoadState = %q, %v; want %q", fileSync, got, err, content)
			}
		}
		p := filepath.Join(dir, "state", "recipients-24h.json")
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("FileSync=%v: %s: %v %v, want mode 0600", fileSync, p, fi, err)
		}
		if fi, err := os.Stat(filepath.Dir(p)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("FileSync=%v: state/: %v %v, want mode 0700", fileSync, fi, err)
		}
		if left, err := s.PartialFiles(); err != nil || len(left) != 0 {
			t.Errorf("FileSync=%v: left in tmp/: %v %v", fileSync, left, err)
		}
	}
}

// TestStateFileIsSynced: SaveState waits for the sync that makes the file
// and its rename durable, and its failure is an error that leaves the old
// content in place.
func TestStateFileIsSynced(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t), FileSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SaveState("x.json", []byte("old")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Join(dir, "state")} {
		if g := s.sync.m[d]; g == nil || g.done == 0 {
			t.Errorf("%s was not fsynced", d)
		}
	}

	// The grouped path: one shared filesystem sync, which fails.
	syncs := 0
	s.fs = newSyncGroup(func() error { syncs++; return errors.New("I/O error") })
	err = s.SaveState("x.json", []byte("new"))
	var we *WriteError
	if !errors.As(err, &we) || we.ID != "state/x.json" {
		t.Fatalf("SaveState with a failing sync: %v, want a WriteError for state/x.json", err)
	}
	if syncs == 0 {
		t.Error("SaveState did not sync the filesystem")
	}
	if got, _ := s.LoadState("x.json"); string(got) != "old" {
		t.Errorf("after a failed save the file holds %q, want the old content", got)
	}
	if left, _ := s.PartialFiles(); len(left) != 0 {
		t.Errorf("a failed save left %v", left)
	}
}

// TestStateFileNames: a name can never reach outside state/.
func TestStateFileNames(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(filepath.Join(dir, "spool"), Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", ".", "..", "../x", "a/b", `a\b`, ".hidden", "c:x"} {
		if err := s.SaveState(name, []byte("x")); err == nil {
			t.Errorf("SaveState(%q) succeeded", name)
		}
		if _, err := s.LoadState(name); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("LoadState(%q) = %v, want a refusal", name, err)
		}
	}
	if got := filesUnder(t, dir); len(got) != 0 {
		t.Errorf("refused names wrote %v", got)
	}
}
