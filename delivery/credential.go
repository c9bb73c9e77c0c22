package delivery

import (
	"strings"

	"github.com/oauthrelay/oauthrelay/transport"
)

// CredentialRecovered lifts the pauses an app's refused token caused and
// makes the mail they held back due at once: the app got a token again
// (its secret file fixed, a federated token renewed), so waiting out the
// pause's backoff would only delay mail. Pauses for other reasons stay.
func (s *Scheduler) CredentialRecovered(app string) {
	s.mu.Lock()
	now := s.o.Now()
	lifted := 0
	for _, mb := range s.mbx {
		mc := s.cfg.Mailbox(mb.addr)
		if mc == nil || mc.App != app {
			continue
		}
		// An attempt under way may yet pause for the old token.
		mb.lifts++
		if !mb.configFault || !strings.HasPrefix(mb.pauseReason, "token:") {
			continue
		}
		s.liftConfigPause(mb)
		s.releaseHeld(mb, now, transport.ConfigFault)
		s.broadcast(mb)
		lifted++
	}
	s.mu.Unlock()
	if lifted > 0 {
		s.log.Info("app gets tokens again; mail held back by its credential fault is retried now", "app", app, "mailboxes", lifted)
		s.poke()
	}
}
