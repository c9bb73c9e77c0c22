package delivery

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/oauthrelay/oauthrelay/internal/msemu"
	"github.com/oauthrelay/oauthrelay/queue"
)

// copyTree copies the files under src into dst (made private, as a spool).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A spool written by the previous version (two files a message, see
// queue/testdata/spool-v1) is converted when serve opens it, and its mail
// is delivered: what was due or being delivered reaches Microsoft, held
// and failed mail stays where it was, the corrupt envelope stays for a
// person, and the leftovers of a crash are gone.
func TestPreviousSpoolFormatIsDelivered(t *testing.T) {
	h := newHarness(t, hopts{spoolFrom: "../queue/testdata/spool-v1", noStart: true})
	// The fixture's mail is from app@contoso.com.
	h.emu.AddMailbox(msemu.Mailbox{Address: tMailbox, FullAccess: []string{tClient}, SendAs: []string{tSendAs, "app@contoso.com"}})
	h.start()
	msgs := h.waitDelivered(4)
	var subjects []string
	for _, m := range msgs {
		for _, line := range strings.Split(string(m.Data), "\r\n") {
			if s, ok := strings.CutPrefix(line, "Subject: "); ok {
				subjects = append(subjects, s)
			}
		}
	}
	slices.Sort(subjects)
	if want := []string{"active", "deferred", "incoming", "partial"}; !slices.Equal(subjects, want) {
		t.Fatalf("delivered %v, want %v", subjects, want)
	}
	h.waitDone(4)
	for _, m := range msgs {
		if strings.Contains(string(m.Data), "Subject: partial") && (len(m.Rcpts) != 1 || m.Rcpts[0] != "two@example.com") {
			t.Errorf("the partly delivered message went to %v, want only its pending recipient", m.Rcpts)
		}
	}
	list, bad, err := h.spool.List()
	if err != nil || len(bad) != 1 || !strings.HasPrefix(bad[0], "corrupt/") {
		t.Fatalf("listing the spool: %v; unreadable %v, want the one corrupt envelope", err, bad)
	}
	envs := map[queue.State][]*queue.Envelope{}
	for _, e := range list {
		envs[e.State] = append(envs[e.State], e)
	}
	if len(envs[queue.Hold]) != 1 || len(envs[queue.Failed]) != 1 || len(envs[queue.Incoming])+len(envs[queue.Deferred])+len(envs[queue.Active]) != 0 {
		t.Errorf("spool after delivery: %v", envs)
	}
	if f := envs[queue.Failed]; len(f) == 1 && (len(f[0].Attempts) != 1 || f[0].FailReason == "") {
		t.Errorf("failed message lost its history: %+v", f[0])
	}
	dir := h.cfg.Spool.Dir
	corrupt, _ := os.ReadDir(filepath.Join(dir, "corrupt"))
	if len(corrupt) != 1 || !strings.HasSuffix(corrupt[0].Name(), ".json") {
		t.Errorf("corrupt/ holds %v, want the fixture's corrupt envelope as it was", corrupt)
	} else if _, err := os.Stat(filepath.Join(dir, "messages", strings.TrimSuffix(corrupt[0].Name(), ".json")+".eml")); err != nil {
		t.Errorf("the corrupt envelope's body is gone: %v", err)
	}
	if bodies, _ := os.ReadDir(filepath.Join(dir, "messages")); len(bodies) != 1 {
		t.Errorf("messages/ holds %d bodies, want only the corrupt one's", len(bodies))
	}
	if left, _ := h.spool.PartialFiles(); len(left) != 0 {
		t.Errorf("tmp/ still holds %v", left)
	}
}
