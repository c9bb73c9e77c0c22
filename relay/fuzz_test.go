package relay

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/internal/testkit"
	"github.com/oauthrelay/oauthrelay/queue"
)

// pipeConfig is a relay without TLS for sessions over net.Pipe. The "app"
// client logs in from anywhere (the session is said to come from
// loopback, where AUTH in clear text is allowed); "local" is trusted by
// address and may send as anyone the mailbox may.
const pipeConfig = `[listen]
address = "127.0.0.1:0"
hostname = "relay.test"
max_recipients = 50
max_message_size = "64KB"
idle_timeout = "5s"
data_timeout = "5s"
auth_max_failures = 1000

[spool]
dir = %q

[[app]]
name = "contoso"
tenant_id = "00000000-0000-0000-0000-000000000000"
client_id = "11111111-2222-3333-4444-555555555555"
client_secret = "not-a-real-secret"

[[mailbox]]
address = "helpdesk@contoso.com"
app = "contoso"
send_as = ["noreply@contoso.com"]

[[client]]
name = "app"
username = "app"
password_hash = %q
senders = ["noreply@contoso.com"]

[[client]]
name = "local"
networks = ["127.0.0.2"]
senders = ["*"]
`

// pipeRelay serves single sessions over net.Pipe, each through a fresh
// go-smtp server configured exactly as Serve configures its listeners.
type pipeRelay struct {
	srv   *Server
	cfg   *config.Config
	spool *queue.Spool
	logs  *testkit.SyncBuffer
	peer  netip.Addr
}

func newPipeRelay(tb testing.TB, peer string) *pipeRelay {
	tb.Helper()
	a, _ := hashes(nil)
	dir := tb.TempDir()
	cfg, err := config.Parse("pipe.toml", []byte(fmt.Sprintf(pipeConfig, filepath.Join(dir, "spool"), a)), func(string) string { return "" })
	if err != nil {
		tb.Fatal(err)
	}
	log, logs := testkit.DebugLogger(tb)
	sp, _, err := queue.Open(cfg.Spool.Dir, queue.Options{Logger: log, Recover: true, Precreate: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sp.Close() })
	p := &pipeRelay{cfg: cfg, spool: sp, logs: logs, peer: netip.MustParseAddr(peer)}
	p.srv = NewServer(cfg, sp, ServerOptions{Logger: log})
	p.srv.peerIP = func(net.Conn) netip.Addr { return p.peer }
	// Failed logins are answered at once: the fuzzer would otherwise
	// spend its time in the brute-force delay.
	p.srv.lim.sleep = func(time.Duration) {}
	return p
}

// oneConnListener hands out one connection, then blocks until that
// connection is closed and reports itself closed, so that go-smtp's
// Server.Serve returns when the session ends.
type oneConnListener struct {
	mu   sync.Mutex
	c    net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return &notifyConn{Conn: c, l: l}, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return pipeAddr{} }

type notifyConn struct {
	net.Conn
	l *oneConnListener
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.l.Close()
	return err
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// session plays input as the client side of one connection, reads every
// reply, and returns the transcript once the server has closed the
// session. The input is followed by an end of data and QUIT so that a
// session left inside DATA or an AUTH exchange still ends.
func (p *pipeRelay) session(tb testing.TB, input []byte) []byte {
	tb.Helper()
	client, server := net.Pipe()
	l := &oneConnListener{c: server, done: make(chan struct{})}
	srv := p.srv.newSMTPServer(nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	var out bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		client.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(&out, client)
	}()
	client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	client.Write(input)
	client.Write([]byte("\r\n.\r\nQUIT\r\n"))
	// A session may legitimately wait for more (BDAT with a large size):
	// give it a moment to answer QUIT, then hang up. Over net.Pipe a
	// session that will answer does so in microseconds; a long wait here
	// made fuzzing crawl on every such input.
	select {
	case <-read:
	case <-time.After(200 * time.Millisecond):
	}
	client.Close()
	<-read
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		tb.Fatalf("the session did not end after the client hung up")
	}
	return out.Bytes()
}

// checkIntact fails if the server recovered from a panic, left a partial
// file behind, or spooled anything unreadable or unsafe.
func (p *pipeRelay) checkIntact(tb testing.TB) {
	tb.Helper()
	if l := p.logs.String(); strings.Contains(l, "panic serving") {
		tb.Fatalf("the server recovered from a panic:\n%s", l)
	}
	partial, err := p.spool.PartialFiles()
	if err != nil {
		tb.Fatal(err)
	}
	if len(partial) > 0 {
		tb.Fatalf("tmp/ holds %d partial files after the session ended", len(partial))
	}
	envs, bad, err := p.spool.List()
	if err != nil || len(bad) > 0 {
		tb.Fatalf("spool listing: %v, unreadable %v", err, bad)
	}
	for _, e := range envs {
		b, err := spooledBody(p.spool, e.ID)
		if err != nil || int64(len(b)) != e.Size {
			tb.Fatalf("envelope %s: body %v, size %d", e.ID, err, e.Size)
		}
		fields := []string{e.MailFrom, e.Mailbox, e.Client}
		for _, r := range e.Recipients {
			fields = append(fields, r.Address)
		}
		for _, f := range fields {
			if !validRecipient(f) && f != e.Client {
				tb.Fatalf("envelope %s holds an unsafe address %q", e.ID, f)
			}
		}
	}
}

func plainAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// purge empties the spool so that checking it stays cheap however many
// inputs the fuzzer has run.
func (p *pipeRelay) purge(tb testing.TB) {
	envs, _, err := p.spool.List()
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range envs {
		if err := p.spool.Remove(e); err != nil {
			tb.Fatal(err)
		}
	}
}

// FuzzListener feeds arbitrary command streams to a listener session over
// net.Pipe: the server must never panic, never hang once the client has
// gone, never leave a partial file in the spool, and only ever spool
// envelopes that are readable and hold sendable addresses.
func FuzzListener(f *testing.F) {
	auth := "AUTH PLAIN " + plainAuth("app", appPassword) + "\r\n"
	msg := "From: noreply@contoso.com\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n.\r\n"
	for _, s := range []string{
		"EHLO a\r\n" + auth + "MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n" + msg + "QUIT\r\n",
		"HELO a\r\nMAIL FROM:<x@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n" + msg,
		"EHLO a\nAUTH PLAIN " + plainAuth("app", appPassword) + "\nMAIL FROM:<noreply@contoso.com>\nRCPT TO:<a@example.com>\nDATA\nSubject: x\n\nbody\n.\n",
		"EHLO a\r\n" + auth + "MAIL FROM:<noreply@contoso.com> SMTPUTF8 BODY=8BITMIME SIZE=100\r\nRCPT TO:<jürgen@例え.jp>\r\nBDAT 5 LAST\r\nhello",
		"EHLO a\r\n" + auth + "MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@exa\x00mple.com>\r\nRCPT TO:<\xff@example.com>\r\nRCPT TO:<a@example.com\rDATA>\r\n",
		"EHLO a\r\nAUTH PLAIN !!!\r\nAUTH LOGIN\r\n%%%\r\nAUTH LOGIN YXBw\r\nYXBwLXBhc3N3b3Jk\r\nAUTH XOAUTH2\r\n",
		"EHLO a\r\nJUNK\r\n\x01\x02\r\nMAIL\r\nRCPT TO:<x>\r\nDATA\r\nBDAT\r\nBDAT -1\r\nBDAT 99999999999999999999\r\nRSET\r\nNOOP\r\nVRFY x\r\nSTARTTLS\r\n",
		"EHLO a\r\n" + auth + "MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nFrom: stranger@evil.example\r\n\r\nx\r\n.\r\n",
		"EHLO a\r\n" + auth + "MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nFrom: noreply@contoso.com\r\n\r\nsmuggle\n.\nMAIL FROM:<x@evil.example>\r\n.\r\n",
		"EHLO a\r\n" + auth + "MAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nFrom: noreply@contoso.com\r\nSubject: x\rFrom: <ceo@contoso.com>\r\n\r\nx\r.\r\n.\ry\r\n.\r\r\n.\r\nNOOP\r\n",
		"MAIL FROM:<noreply@contoso.com> AUTH=<> RET=HDRS ENVID=x\r\nRCPT TO:<a@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@example.com\r\n",
	} {
		f.Add([]byte(s))
	}
	// One relay per fuzzing process: its spool collects what the inputs
	// manage to queue.
	p := newPipeRelay(f, "127.0.0.1")
	f.Fuzz(func(t *testing.T, input []byte) {
		p.session(t, input)
		p.checkIntact(t)
		p.purge(t)
	})
}

// TestPipeSession checks the fuzzing harness itself: a good session over
// net.Pipe is queued, and the transcript shows every reply.
func TestPipeSession(t *testing.T) {
	p := newPipeRelay(t, "127.0.0.1")
	out := p.session(t, []byte("EHLO a\r\nAUTH PLAIN "+plainAuth("app", appPassword)+"\r\nMAIL FROM:<noreply@contoso.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nFrom: noreply@contoso.com\r\n\r\nbody\r\n.\r\n"))
	if !queuedRE.Match(out) || !bytes.Contains(out, []byte("221 2.0.0")) {
		t.Fatalf("transcript:\n%s", out)
	}
	p.checkIntact(t)
	if ids, _ := p.spool.IDs(queue.Incoming); len(ids) != 1 {
		t.Fatalf("%d messages queued, want 1", len(ids))
	}
}
