package queue

import (
	"io"
	"path/filepath"
	"testing"
)

// readBody returns the body of id as Body serves it.
func readBody(s *Spool, id string) ([]byte, error) {
	r, n, err := s.Body(id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err == nil && int64(len(b)) != n {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

// A message's life in both sync modes: one file, committed whole, claimed
// by a rename, a history only once an attempt fails, nothing left after.
func TestMessageLifecycle(t *testing.T) {
	for _, fileSync := range []bool{false, true} {
		dir := t.TempDir()
		s, _, err := Open(dir, Options{Logger: testLog(t), FileSync: fileSync})
		if err != nil {
			t.Fatal(err)
		}
		env := commit(t, s, "Subject: life\r\n\r\nbody\r\n")
		if got := filesUnder(t, dir); len(got) != 1 || got[0] != filepath.Join(dir, "incoming", env.ID+".eml") {
			t.Fatalf("FileSync=%v: after commit the spool holds %v, want one message file", fileSync, got)
		}
		if _, err := verifyMessageFile(s.msgPath(Incoming, env.ID)); err != nil {
			t.Fatalf("FileSync=%v: committed file: %v", fileSync, err)
		}
		got, err := s.Claim(Incoming, env.ID)
		if err != nil || got.State != Active || len(got.Recipients) != 2 {
			t.Fatalf("FileSync=%v: Claim: %+v %v", fileSync, got, err)
		}
		if _, err := s.Claim(Incoming, env.ID); err != ErrNotFound {
			t.Fatalf("FileSync=%v: a second Claim: %v, want ErrNotFound", fileSync, err)
		}
		got.Attempts = append(got.Attempts, Attempt{Result: "deferred", Reply: "451 4.4.1 try later"})
		if err := s.Move(got, Deferred); err != nil {
			t.Fatal(err)
		}
		if files := filesUnder(t, dir); len(files) != 2 {
			t.Fatalf("FileSync=%v: after a failed attempt the spool holds %v, want the message and its history", fileSync, files)
		}
		again, err := s.Claim(Deferred, env.ID)
		if err != nil || len(again.Attempts) != 1 || again.Attempts[0].Reply != "451 4.4.1 try later" {
			t.Fatalf("FileSync=%v: history not read back: %+v %v", fileSync, again, err)
		}
		if b, err := readBody(s, env.ID); err != nil || string(b) != "Subject: life\r\n\r\nbody\r\n" {
			t.Fatalf("FileSync=%v: body %q %v", fileSync, b, err)
		}
		if err := s.Remove(again); err != nil {
			t.Fatal(err)
		}
		if files := filesUnder(t, dir); len(files) != 0 {
			t.Fatalf("FileSync=%v: after Remove the spool holds %v", fileSync, files)
		}
	}
}
