package queue

import (
	"io"
	"maps"
	"slices"
	"testing"
)

// TestTakeRecovered: the envelopes recovery read in incoming/, deferred/
// and active/ (put back in incoming/) are handed over once, with their
// state; hold/ and failed/ are not awaiting delivery. A spool opened
// without recovery has none.
func TestTakeRecovered(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	in, def, act, hold := commit(t, s, "a"), commit(t, s, "b"), commit(t, s, "c"), commit(t, s, "d")
	def.NextAttempt = def.Received.Add(3600e9)
	if err := s.Move(def, Deferred); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(Incoming, act.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Move(hold, Hold); err != nil {
		t.Fatal(err)
	}
	if got := s.TakeRecovered(); got != nil {
		t.Errorf("a spool that was not recovered hands over %d envelopes", len(got))
	}

	s2, _, err := Open(dir, Options{Logger: testLog(t), Recover: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*Envelope{}
	for _, e := range s2.TakeRecovered() {
		got[e.ID] = e
	}
	want := map[string]State{in.ID: Incoming, def.ID: Deferred, act.ID: Incoming}
	if len(got) != len(want) {
		t.Errorf("recovered %v, want %v", slices.Collect(maps.Keys(got)), want)
	}
	for id, st := range want {
		e := got[id]
		if e == nil || e.State != st {
			t.Errorf("%s: recovered %+v, want it in %s", id, e, st)
			continue
		}
		if e.Mailbox != "helpdesk@contoso.com" || len(e.Recipients) != 2 {
			t.Errorf("%s: recovered envelope %+v is not the one committed", id, e)
		}
	}
	if e := got[def.ID]; e != nil && !e.NextAttempt.Equal(def.NextAttempt) {
		t.Errorf("deferred message: next attempt %v, want its history's %v", e.NextAttempt, def.NextAttempt)
	}
	if again := s2.TakeRecovered(); again != nil {
		t.Errorf("TakeRecovered a second time: %d envelopes, want none", len(again))
	}
}

// TestClaimKeepsTheFileOpen: the body of a claimed message is read from
// the file Claim opened (here the file's name is gone from active/ and
// the body still reads), with or without a changed envelope in history/,
// and the claim's end closes it.
func TestClaimKeepsTheFileOpen(t *testing.T) {
	s, _, err := Open(t.TempDir(), Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	const body = "Subject: claimed\r\n\r\nhello\r\n"
	env := commit(t, s, body)
	for _, withHist := range []bool{false, true} {
		got, err := s.Claim(env.State, env.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.hist != withHist {
			t.Fatalf("hist = %v, want %v", got.hist, withHist)
		}
		f := got.file
		if f == nil {
			t.Fatal("Claim did not keep the message file open")
		}
		// Move the name away: a reopen by name would fail.
		aside := s.msgPath(Hold, env.ID)
		if err := rename(s.msgPath(Active, env.ID), aside); err != nil {
			t.Fatal(err)
		}
		for range 2 { // a retried connection reads it again
			r, n, err := s.BodyOf(got)
			if err != nil {
				t.Fatalf("hist=%v: BodyOf: %v", withHist, err)
			}
			b, err := io.ReadAll(r)
			r.Close()
			if string(b) != body || n != int64(len(body)) || err != nil {
				t.Fatalf("hist=%v: body %q (%d bytes) %v, want %q", withHist, b, n, err, body)
			}
		}
		if err := rename(aside, s.msgPath(Active, env.ID)); err != nil {
			t.Fatal(err)
		}
		got.NextAttempt = got.Received
		if err := s.Move(got, Deferred); err != nil {
			t.Fatal(err)
		}
		if got.file != nil {
			t.Error("Move left the claimed file open")
		}
		if _, err := f.Stat(); err == nil {
			t.Error("the claimed file is still open after Move")
		}
		env = got
	}
	got, err := s.Claim(Deferred, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(got); err != nil || got.file != nil {
		t.Fatalf("Remove: %v; file left open: %v", err, got.file != nil)
	}
}
