package queue

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/testkit"
)

// testLog is a debug logger whose output the test prints if it fails.
func testLog(t testing.TB) *slog.Logger {
	l, _ := testkit.DebugLogger(t)
	return l
}

func commit(t *testing.T, s *Spool, body string) *Envelope {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	env := &Envelope{Client: "erp", Mailbox: "helpdesk@contoso.com", MailFrom: "noreply@contoso.com",
		Recipients: []*Recipient{{Address: "a@example.com"}, {Address: "b@example.com"}}}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	return env
}

func TestCommitAndLoad(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	env := commit(t, s, "Subject: x\r\n\r\nbody\r\n")
	select {
	case got := <-s.Notify():
		id := got.ID
		if id != env.ID {
			t.Errorf("notified %s, want %s", id, env.ID)
		}
	default:
		t.Error("no notification after commit")
	}
	got, err := s.Load(Incoming, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != int64(len("Subject: x\r\n\r\nbody\r\n")) || got.State != Incoming || got.Recipients[1].State != RcptPending || got.NextAttempt.IsZero() {
		t.Errorf("loaded %+v", got)
	}
	b, _ := readBody(s, env.ID)
	if string(b) != "Subject: x\r\n\r\nbody\r\n" {
		t.Errorf("body %q", b)
	}
	if f, _ := Find(s, env.ID); f == nil || f.State != Incoming {
		t.Errorf("Find: %v", f)
	}
	// State changes are renames.
	if err := s.Move(got, Deferred); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "incoming", env.ID+".json")); !os.IsNotExist(err) {
		t.Errorf("envelope still in incoming/")
	}
	if e, err := s.Find(env.ID); err != nil || e.State != Deferred {
		t.Errorf("Find after Move: %v %v", e, err)
	}
	// A stale envelope (moved by someone else) is not resurrected.
	stale := *got
	stale.State = Incoming
	if err := s.Move(&stale, Hold); err != ErrNotFound {
		t.Errorf("Move of a stale envelope: %v, want ErrNotFound", err)
	}
	if err := s.Remove(got); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Find(env.ID); err != ErrNotFound {
		t.Errorf("after Remove: %v", err)
	}
	if files := filesUnder(t, dir); len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
	// An aborted message leaves nothing.
	w, _ := s.Create()
	w.Write([]byte("x"))
	w.Abort()
	if files := filesUnder(t, filepath.Join(dir, "tmp")); len(files) != 0 {
		t.Errorf("tmp/ holds %v after Abort", files)
	}
}

// filesUnder lists the regular files below dir (tmp/ has shard
// directories, which do not count).
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Find is a helper so the test reads like the CLI would use the spool.
func Find(s *Spool, id string) (*Envelope, error) { return s.Find(id) }

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s, _, err := Open(dir, Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	env := commit(t, s, "Subject: x\r\n\r\nbody\r\n")
	if err := s.Move(env, Deferred); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		n++
		return nil
	})
	if n < 11 {
		t.Errorf("walked only %d entries", n)
	}
}

func TestIDsSortByTime(t *testing.T) {
	// Ids are monotonic within the process, so start after any id other
	// tests made.
	base := time.Now().UTC().Truncate(time.Second).Add(24 * time.Hour)
	idMu.Lock()
	if lastID.After(base) { // an earlier run of this test (-count)
		base = lastID.Truncate(time.Second).Add(time.Hour)
	}
	idMu.Unlock()
	var ids []string
	times := []time.Duration{0, time.Microsecond, time.Second, time.Hour, 24 * time.Hour, 400 * 24 * time.Hour}
	for _, d := range times {
		ids = append(ids, NewID(base.Add(d)))
	}
	// Same instant many times: still unique and increasing.
	for range 100 {
		ids = append(ids, NewID(base.Add(400*24*time.Hour)))
	}
	if !sort.StringsAreSorted(ids) {
		t.Errorf("ids do not sort by time: %v", ids)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] || !ValidID(id) {
			t.Errorf("id %q duplicate or invalid", id)
		}
		seen[id] = true
	}
	if !strings.HasPrefix(ids[0], base.Format("20060102T150405")+".000000-") {
		t.Errorf("id %q does not start with its time", ids[0])
	}
	for _, bad := range []string{"", "../etc/passwd", ".hidden-0000000", "a/b-1234567890", "short"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func TestRecovery(t *testing.T) {
	const id1, id2, id3 = "20260101T000000.000001-aaaaaa", "20260101T000000.000002-bbbbbb", "20260101T000000.000003-cccccc"
	envJSON := func(id string, size int) string {
		return fmt.Sprintf(`{"id":%q,"received":"2026-01-01T00:00:00Z","client":"erp","mailbox":"m@contoso.com","mail_from":"m@contoso.com","recipients":[{"address":"a@example.com","state":"pending"}],"size":%d,"next_attempt":"2026-01-01T00:00:00Z"}`, id, size)
	}
	// msgFile is a whole message file for id with body "body".
	msgFile := func(id string) string {
		return string(appendTrailer([]byte("body"), []byte(envJSON(id, 4)+"\n"), 4, crc32Update(0, []byte("body"))))
	}
	flipped := "x" + msgFile(id1)[1:]
	tests := []struct {
		name    string
		before  map[string]string // path → content
		after   []string          // every file afterwards
		report  RecoveryReport
		logLine string
	}{
		{
			name:   "half-written files in tmp are removed",
			before: map[string]string{"tmp/" + id1 + ".eml": "partial", "tmp/" + id1 + ".json": "{", "tmp/" + id2 + ".json.deferred": "{}", "tmp/03/" + id3 + ".eml": msgFile(id3)[:20]},
			report: RecoveryReport{RemovedPartial: 4},
		},
		{
			name:   "a whole message in tmp (its rename after the 250 lost) goes to incoming",
			before: map[string]string{"tmp/07/" + id1 + ".eml": msgFile(id1)},
			after:  []string{"incoming/" + id1 + ".eml"},
			report: RecoveryReport{Committed: []string{id1}},
		},
		{
			name:   "a message in tmp whose checksum fails is removed",
			before: map[string]string{"tmp/07/" + id1 + ".eml": flipped},
			report: RecoveryReport{RemovedPartial: 1},
		},
		{
			name:   "history without a message is removed",
			before: map[string]string{"history/" + id1 + ".json": envJSON(id1, 4)},
			report: RecoveryReport{RemovedPartial: 1},
		},
		{
			name:   "interrupted delivery goes back to incoming",
			before: map[string]string{"active/" + id1 + ".eml": msgFile(id1)},
			after:  []string{"incoming/" + id1 + ".eml"},
			report: RecoveryReport{Requeued: []string{id1}},
		},
		{
			name:    "a message cut short goes to corrupt",
			before:  map[string]string{"deferred/" + id1 + ".eml": msgFile(id1)[:30]},
			after:   []string{"corrupt/" + id1 + ".eml"},
			report:  RecoveryReport{Corrupt: []string{id1}},
			logLine: "no complete footer",
		},
		{
			name:    "unreadable history goes to corrupt, and stays",
			before:  map[string]string{"deferred/" + id1 + ".eml": msgFile(id1), "history/" + id1 + ".json": "{not json"},
			after:   []string{"corrupt/" + id1 + ".eml", "history/" + id1 + ".json"},
			report:  RecoveryReport{Corrupt: []string{id1}},
			logLine: "unreadable message moved to corrupt/",
		},
		{
			name: "healthy states are left alone",
			before: map[string]string{
				"incoming/" + id1 + ".eml": msgFile(id1),
				"deferred/" + id2 + ".eml": msgFile(id2), "history/" + id2 + ".json": envJSON(id2, 4),
				"hold/" + id3 + ".eml":          msgFile(id3),
				"corrupt/x-unrelated-file.json": "whatever",
			},
			after: []string{"corrupt/x-unrelated-file.json", "deferred/" + id2 + ".eml", "history/" + id2 + ".json", "hold/" + id3 + ".eml", "incoming/" + id1 + ".eml"},
		},
		{
			name:   "previous format: orphan body (crash between the renames) is removed",
			before: map[string]string{"messages/" + id1 + ".eml": "body"},
			report: RecoveryReport{RemovedPartial: 1},
		},
		{
			name:   "previous format: interrupted delivery is converted and goes back to incoming",
			before: map[string]string{"messages/" + id1 + ".eml": "body", "active/" + id1 + ".json": envJSON(id1, 4)},
			after:  []string{"incoming/" + id1 + ".eml"},
			report: RecoveryReport{Requeued: []string{id1}, Migrated: 1},
		},
		{
			name:    "previous format: unreadable envelope goes to corrupt as it is",
			before:  map[string]string{"messages/" + id1 + ".eml": "body", "deferred/" + id1 + ".json": "{not json"},
			after:   []string{"corrupt/" + id1 + ".json", "messages/" + id1 + ".eml"},
			report:  RecoveryReport{Corrupt: []string{id1}},
			logLine: "unreadable envelope of the previous spool format moved to corrupt/",
		},
		{
			name:    "previous format: envelope without body goes to corrupt",
			before:  map[string]string{"incoming/" + id1 + ".json": envJSON(id1, 4)},
			after:   []string{"corrupt/" + id1 + ".json"},
			report:  RecoveryReport{Corrupt: []string{id1}},
			logLine: "no such file",
		},
		{
			name:    "previous format: body of the wrong size goes to corrupt",
			before:  map[string]string{"messages/" + id1 + ".eml": "bo", "incoming/" + id1 + ".json": envJSON(id1, 4)},
			after:   []string{"corrupt/" + id1 + ".json", "messages/" + id1 + ".eml"},
			report:  RecoveryReport{Corrupt: []string{id1}},
			logLine: "has 2 bytes, the envelope says 4",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, d := range []string{"tmp", "tmp/03", "tmp/07", "messages", "history", "incoming", "active", "deferred", "hold", "failed", "corrupt"} {
				os.MkdirAll(filepath.Join(dir, d), 0o700)
			}
			for p, c := range tt.before {
				if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			logger, logs := testkit.DebugLogger(t)
			_, rep, err := Open(dir, Options{Logger: logger, Recover: true})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if !d.IsDir() {
					rel, _ := filepath.Rel(dir, p)
					got = append(got, filepath.ToSlash(rel))
				}
				return nil
			})
			sort.Strings(tt.after)
			if fmt.Sprint(got) != fmt.Sprint(tt.after) {
				t.Errorf("after recovery:\n got %v\nwant %v", got, tt.after)
			}
			if fmt.Sprint(*rep) != fmt.Sprint(tt.report) {
				t.Errorf("report %+v, want %+v", *rep, tt.report)
			}
			if tt.logLine != "" && !strings.Contains(logs.String(), tt.logLine) {
				t.Errorf("log does not say %q:\n%s", tt.logLine, logs.String())
			}
			if strings.Contains(tt.name, "interrupted") || strings.Contains(tt.name, "whole message") {
				s, _, _ := Open(dir, Options{Logger: logger})
				if e, err := s.Load(Incoming, id1); err != nil || e.State != Incoming {
					t.Errorf("requeued envelope: %v %v", e, err)
				}
			}
		})
	}
}

func TestOpenWithoutRecoverLeavesActive(t *testing.T) {
	dir := t.TempDir()
	s, _, _ := Open(dir, Options{Logger: testLog(t)})
	env := commit(t, s, "x")
	if err := s.Move(env, Active); err != nil {
		t.Fatal(err)
	}
	if _, rep, err := Open(dir, Options{Logger: testLog(t)}); err != nil || len(rep.Requeued) != 0 {
		t.Fatalf("Open without Recover: %v %v", rep, err)
	}
	if _, err := s.Load(Active, env.ID); err != nil {
		t.Errorf("active envelope moved without Recover: %v", err)
	}
}

func TestRetryPolicy(t *testing.T) {
	p := RetryPolicy{Min: time.Minute, Max: time.Hour, MaxAge: 120 * time.Hour}
	for _, tt := range []struct {
		n      int
		jitter float64
		want   time.Duration
	}{
		{0, 0.5, time.Minute},
		{1, 0.5, time.Minute},
		{2, 0.5, 2 * time.Minute},
		{3, 0.5, 4 * time.Minute},
		{6, 0.5, 32 * time.Minute},
		{7, 0.5, time.Hour}, // 64m clamped
		{50, 0.5, time.Hour},
		{1, 0, 54 * time.Second},        // -10%
		{1, 0.999999, 66 * time.Second}, // just under +10%
		{7, 0, 54 * time.Minute},
		{3, 0.25, 228 * time.Second}, // 4m × 0.95: no integer truncation of the factor
	} {
		got := p.Delay(tt.n, tt.jitter)
		if d := got - tt.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("Delay(%d, %v) = %v, want %v", tt.n, tt.jitter, got, tt.want)
		}
	}
	recv := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name    string
		now     time.Time
		n       int
		want    time.Time
		expired bool
	}{
		{"first retry", recv.Add(time.Second), 1, recv.Add(time.Second + time.Minute), false},
		{"clamped", recv.Add(10 * time.Hour), 20, recv.Add(11 * time.Hour), false},
		{"pulled in to the deadline", recv.Add(119*time.Hour + 30*time.Minute), 20, recv.Add(120 * time.Hour), false},
		{"at the deadline", recv.Add(120 * time.Hour), 20, recv.Add(120 * time.Hour), true},
		{"past the deadline", recv.Add(200 * time.Hour), 1, recv.Add(200 * time.Hour), true},
	} {
		next, expired := p.Next(recv, tt.now, tt.n, 0.5)
		if !next.Equal(tt.want) || expired != tt.expired {
			t.Errorf("%s: Next = %v, %v; want %v, %v", tt.name, next, expired, tt.want, tt.expired)
		}
	}
	// Without max_age nothing expires.
	if _, expired := (RetryPolicy{Min: time.Minute, Max: time.Hour}).Next(recv, recv.Add(1000*time.Hour), 3, 0.5); expired {
		t.Error("expired without MaxAge")
	}
}

// TestConcurrentCommits runs many commits at once (run it with -race): the
// group-commit syncer must let every one finish, and each message must be
// whole.
func TestConcurrentCommits(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 25
	var wg sync.WaitGroup
	ids := make(chan string, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				env := commit(t, s, fmt.Sprintf("body %d/%d", w, i))
				ids <- env.ID + " " + fmt.Sprintf("body %d/%d", w, i)
			}
		}()
	}
	wg.Wait()
	close(ids)
	n := 0
	for line := range ids {
		id, want, _ := strings.Cut(line, " ")
		b, err := readBody(s, id)
		if err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", id, b, err, want)
		}
		n++
	}
	if got, _ := s.IDs(Incoming); len(got) != workers*each || n != workers*each {
		t.Errorf("incoming holds %d, committed %d", len(got), n)
	}
}

func TestSyncerSharesFsyncs(t *testing.T) {
	dir := t.TempDir()
	y := newSyncer()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := y.dirs(dir, dir); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	d := y.m[dir]
	if d.done == 0 || d.done > 100 || d.running {
		t.Errorf("generation %d done, running %v", d.done, d.running)
	}
	// A directory that cannot be opened reports its error to every waiter.
	if err := y.dir(filepath.Join(dir, "missing")); err == nil {
		t.Error("fsync of a missing directory succeeded")
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, js := range []string{
		`{`,
		`{"id":"../../etc","mailbox":"m","recipients":[{"address":"a"}]}`,
		`{"id":"20260101T000000.000001-aaaaaa","recipients":[{"address":"a"}]}`,
		`{"id":"20260101T000000.000001-aaaaaa","mailbox":"m","recipients":[]}`,
		`{"id":"20260101T000000.000001-aaaaaa","mailbox":"m","recipients":[{"address":""}]}`,
	} {
		if _, err := Decode([]byte(js)); err == nil {
			t.Errorf("Decode(%s) succeeded", js)
		}
	}
	if _, err := ParseState("Deferred"); err != nil {
		t.Error(err)
	}
	if _, err := ParseState("sent"); err == nil {
		t.Error("ParseState(sent) succeeded")
	}
}

// TestOpenExisting: a queue command opens serve's spool without creating
// anything (run as root it would leave directories the relay cannot
// write), works on a spool from before tmp/ had shards, and refuses a
// directory that is not a spool.
func TestOpenExisting(t *testing.T) {
	if _, _, err := Open(t.TempDir(), Options{Existing: true, Logger: testLog(t)}); err == nil || !strings.Contains(err.Error(), "oauthrelay serve") {
		t.Errorf("opening an empty directory as an existing spool: %v", err)
	}
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	env := commit(t, s, "Subject: x\r\n\r\nbody\r\n")
	// An older spool: no shards under tmp/.
	shards, _ := filepath.Glob(filepath.Join(dir, "tmp", "*"))
	for _, d := range shards {
		os.Remove(d)
	}
	s2, _, err := Open(dir, Options{Existing: true, Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "tmp", "*")); len(left) != 0 {
		t.Errorf("Open(Existing) created %v", left)
	}
	if _, err := s2.Hold(env.ID); err != nil {
		t.Fatalf("hold on an older spool: %v", err)
	}
	if _, err := s2.Release(env.ID); err != nil {
		t.Fatalf("release on an older spool: %v", err)
	}
}

// TestMoveUndoesRenameWhenSaveFails: an error from Move means nothing
// changed, so a worker's idea of where the envelope is stays true.
func TestMoveUndoesRenameWhenSaveFails(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	env := commit(t, s, "Subject: x\r\n\r\nbody\r\n")
	// Writing the new content fails: its shard directories are gone.
	for _, d := range s.tmpDirs {
		os.Remove(d)
		os.WriteFile(d, nil, 0o600) // a file where a directory should be
	}
	if err := s.Move(env, Active); err == nil {
		t.Fatal("Move succeeded without anywhere to write")
	}
	if env.State != Incoming {
		t.Errorf("env.State = %s after a failed Move, want incoming", env.State)
	}
	if _, err := s.Load(Incoming, env.ID); err != nil {
		t.Errorf("the envelope left incoming/ after a failed Move: %v", err)
	}
}

// TestProbe: the probe succeeds on a spool that takes mail, leaves nothing
// behind, and fails once tmp/ cannot be written.
func TestProbe(t *testing.T) {
	dir := t.TempDir()
	s, _, err := Open(dir, Options{Logger: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Probe(); err != nil {
		t.Fatal(err)
	}
	if left, err := s.PartialFiles(); err != nil || len(left) != 0 {
		t.Errorf("the probe left %v %v", left, err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "tmp")); err != nil {
		t.Fatal(err)
	}
	if err := s.Probe(); err == nil {
		t.Fatal("Probe succeeded on a spool without tmp/")
	}
}
