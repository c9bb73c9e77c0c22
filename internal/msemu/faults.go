package msemu

import (
	"strings"
	"time"
)

// fault answers the next n attempts of one kind with a scripted reply.
type fault struct {
	n     int
	reply string
}

// take consumes one shot of the fault, returning its reply.
func (f *fault) take() (string, bool) {
	if f.n <= 0 {
		return "", false
	}
	f.n--
	return f.reply, true
}

// SetTokenOutage makes the token endpoint answer 503 temporarily_unavailable.
func (e *Emulator) SetTokenOutage(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.outage = on
}

// SetTokenDelay delays every token endpoint answer by d.
func (e *Emulator) SetTokenDelay(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tokenDelay = d
}

// SetTokenLifetime changes the lifetime of tokens issued from now on.
func (e *Emulator) SetTokenLifetime(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lifetime = d
}

// SetTenantSMTPAuthDisabled is Set-TransportConfig
// -SmtpClientAuthenticationDisabled: every AUTH gets 535 5.7.139.
func (e *Emulator) SetTenantSMTPAuthDisabled(on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tenantOff = on
}

// FailNextData answers the next n DATA transactions (after the final dot)
// with reply, a full reply line such as
// "451 4.7.0 Temporary server error. Please try again later. PRX4".
func (e *Emulator) FailNextData(n int, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failData = fault{n, reply}
}

// FailNextRcpt answers the next n RCPT commands with reply.
func (e *Emulator) FailNextRcpt(n int, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failRcpt = fault{n, reply}
}

// FailRcptAddress answers every RCPT for addr with reply; "" clears.
func (e *Emulator) FailRcptAddress(addr, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if reply == "" {
		delete(e.failRcptAddr, strings.ToLower(addr))
		return
	}
	e.failRcptAddr[strings.ToLower(addr)] = reply
}

// DropAfterData makes the next n messages read the whole DATA and then
// close the TCP connection without replying; they are not delivered.
func (e *Emulator) DropAfterData(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dropData = n
}

// FailAuth answers every AUTH for mailbox with reply; "" clears.
func (e *Emulator) FailAuth(mailbox, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if reply == "" {
		delete(e.failAuth, strings.ToLower(mailbox))
		return
	}
	e.failAuth[strings.ToLower(mailbox)] = reply
}

// FailNextAuth answers the next n AUTH commands, whatever the mailbox,
// with reply.
func (e *Emulator) FailNextAuth(n int, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failAuthNext = fault{n, reply}
}

// FailNextConnect answers the next n connections with reply instead of
// the greeting, then closes them (e.g. "432 4.3.2 Concurrent connections
// limit exceeded." or "421 4.3.2 Service not available").
func (e *Emulator) FailNextConnect(n int, reply string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failConnect = fault{n, reply}
}

// SetAcceptedTLSMin sets the oldest TLS version the SMTP server accepts;
// default TLS 1.2. An older client completes the handshake, as with
// Exchange Online, and then gets 421 4.7.66 and is disconnected.
func (e *Emulator) SetAcceptedTLSMin(v uint16) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tlsMin = v
}

// SetTLSMax caps the newest TLS version the SMTP server negotiates after
// STARTTLS (0: no cap), to play a server that only speaks TLS 1.0 or 1.1.
func (e *Emulator) SetTLSMax(v uint16) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tlsMax = v
}
