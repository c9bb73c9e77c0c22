package queue

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

func openTestSpool(t *testing.T) *Spool { return openTestSpoolAt(t, nil) }

// openTestSpoolAt opens a spool whose clock is now (time.Now when nil).
func openTestSpoolAt(t *testing.T, now func() time.Time) *Spool {
	t.Helper()
	s, _, err := Open(t.TempDir(), Options{Logger: testLog(t), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// put commits a message and moves it to st, with attempts and recipient
// states as given.
func put(t *testing.T, s *Spool, st State, rcpts ...*Recipient) *Envelope {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: test\r\n\r\nbody\r\n")
	env := &Envelope{Client: "erp", Mailbox: "helpdesk@contoso.com", MailFrom: "noreply@contoso.com", Recipients: rcpts}
	if len(rcpts) == 0 {
		env.Recipients = []*Recipient{{Address: "a@example.org"}}
	}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	if st != Incoming {
		env.Attempts = []Attempt{{At: s.now(), Result: "deferred", Reply: "451 4.7.0 Temporary server error"}}
		env.NextAttempt = s.now().Add(time.Hour)
		if err := s.Move(env, st); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

// tree lists "state/id" for every envelope in the spool.
func tree(t *testing.T, s *Spool) []string {
	t.Helper()
	var out []string
	for _, st := range States {
		ids, err := s.IDs(st)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			out = append(out, string(st)+"/"+id)
		}
	}
	sort.Strings(out)
	return out
}

func TestAdminTransitions(t *testing.T) {
	tests := []struct {
		name    string
		from    State
		op      func(*Spool, string) (*Envelope, error)
		want    State // "" means removed
		wantErr string
	}{
		{"retry deferred", Deferred, (*Spool).Retry, Incoming, ""},
		{"retry incoming is a no-op with a hint", Incoming, (*Spool).Retry, Incoming, "already due"},
		{"retry held says release", Hold, (*Spool).Retry, Hold, "queue release"},
		{"retry failed says requeue", Failed, (*Spool).Retry, Failed, "requeue-failed"},
		{"hold deferred", Deferred, (*Spool).Hold, Hold, ""},
		{"hold incoming", Incoming, (*Spool).Hold, Hold, ""},
		{"hold held again", Hold, (*Spool).Hold, Hold, ""},
		{"release held", Hold, (*Spool).Release, Incoming, ""},
		{"release deferred says retry", Deferred, (*Spool).Release, Deferred, "queue retry"},
		{"requeue failed", Failed, (*Spool).Requeue, Incoming, ""},
		{"requeue deferred refused", Deferred, (*Spool).Requeue, Deferred, "nothing to requeue"},
		{"delete deferred", Deferred, (*Spool).Delete, "", ""},
		{"delete held", Hold, (*Spool).Delete, "", ""},
		{"delete failed", Failed, (*Spool).Delete, "", ""},
		{"retry active refused", Active, (*Spool).Retry, Active, "being delivered right now"},
		{"hold active refused", Active, (*Spool).Hold, Active, "being delivered right now"},
		{"delete active refused", Active, (*Spool).Delete, Active, "being delivered right now"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := testkit.NewClock(time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC))
			s := openTestSpoolAt(t, clk.Now)
			env := put(t, s, tc.from)
			clk.Advance(time.Minute) // so "now" differs from every time put wrote
			got, err := tc.op(s, env.ID)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			wantTree := []string{}
			if tc.want != "" {
				wantTree = []string{string(tc.want) + "/" + env.ID}
			}
			if gt := tree(t, s); strings.Join(gt, " ") != strings.Join(wantTree, " ") {
				t.Fatalf("spool holds %v, want %v", gt, wantTree)
			}
			_, bodyErr := readBody(s, env.ID)
			if (tc.want == "") != errors.Is(bodyErr, ErrNotFound) {
				t.Fatalf("body present = %v, want %v", bodyErr == nil, tc.want != "")
			}
			if err == nil && tc.want == Incoming {
				back, lerr := s.Load(Incoming, env.ID)
				if lerr != nil {
					t.Fatal(lerr)
				}
				if !back.NextAttempt.Equal(clk.Now()) {
					t.Fatalf("next_attempt = %v, want now (%v)", back.NextAttempt, clk.Now())
				}
				if got == nil || got.State != Incoming {
					t.Fatalf("returned envelope %+v, want state incoming", got)
				}
			}
		})
	}
}

func TestRequeueResetsFailedRecipientsOnly(t *testing.T) {
	s := openTestSpool(t)
	env := put(t, s, Incoming,
		&Recipient{Address: "ok@example.org"},
		&Recipient{Address: "bad@example.org"})
	env.Recipients[0].State = RcptDelivered
	env.Recipients[1].State, env.Recipients[1].Reply = RcptFailed, "550 5.7.60 no SendAs"
	env.FailReason = "bad@example.org: 550 5.7.60 no SendAs"
	env.Notified = []string{"bad@example.org"}
	if err := s.Move(env, Failed); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Requeue(env.ID); err != nil {
		t.Fatal(err)
	}
	back, err := s.Load(Incoming, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if back.Recipients[0].State != RcptDelivered || back.Recipients[1].State != RcptPending {
		t.Fatalf("recipient states %s, %s; want delivered, pending", back.Recipients[0].State, back.Recipients[1].State)
	}
	if back.FailReason != "" {
		t.Fatalf("fail_reason %q kept", back.FailReason)
	}
	if len(back.Notified) != 1 || back.Notified[0] != "bad@example.org" {
		t.Fatalf("notified = %v, want it kept so the sender is never told twice", back.Notified)
	}
	if got := back.PendingAddresses(); len(got) != 1 || got[0] != "bad@example.org" {
		t.Fatalf("pending = %v", got)
	}
}

func TestDeleteCorrupt(t *testing.T) {
	s := openTestSpool(t)
	env := put(t, s, Deferred)
	// Damage the message file and move it to corrupt/ as recovery would.
	if err := os.WriteFile(s.msgPath(Deferred, env.ID), []byte("Subject: cut short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(s.msgPath(Deferred, env.ID), s.msgPath(Corrupt, env.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(env.ID); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, s); len(got) != 0 {
		t.Fatalf("spool holds %v after delete", got)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Dir(), "messages")); len(ents) != 0 {
		t.Fatalf("messages/ still holds %d file(s)", len(ents))
	}
}

func TestAdminUnknownID(t *testing.T) {
	s := openTestSpool(t)
	for _, id := range []string{"20260101T000000.000000-abcdef", "../../etc/passwd"} {
		if _, err := s.Retry(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Retry(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

// TestWorkerReleaseNeverResurrects checks the property queue commands rely
// on: an envelope leaving active/ appears in its new state with its final
// content in one rename, so an operator who moves it away at once does not
// get a second copy written behind them.
func TestWorkerReleaseNeverResurrects(t *testing.T) {
	s := openTestSpool(t)
	env := put(t, s, Incoming)
	if err := s.Move(env, Active); err != nil {
		t.Fatal(err)
	}
	env.LastError = "451 4.7.0 Temporary server error"
	if err := s.Move(env, Deferred); err != nil {
		t.Fatal(err)
	}
	back, err := s.Load(Deferred, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if back.LastError != env.LastError {
		t.Fatalf("last_error = %q, want the content written before the rename", back.LastError)
	}
	if _, err := s.Hold(env.ID); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, s); len(got) != 1 || got[0] != "hold/"+env.ID {
		t.Fatalf("spool holds %v, want only hold/%s", got, env.ID)
	}
}
