package delivery

import (
	"container/heap"
	"strings"
	"time"

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
		if mc == nil || mc.App != app || !mb.configFault || !strings.HasPrefix(mb.pauseReason, "token:") {
			continue
		}
		mb.pausedUntil, mb.configFault, mb.pauseKind, mb.pauseReason, mb.pauseFix, mb.faults = time.Time{}, false, transport.Delivered, "", "", 0
		var keep itemHeap
		for mb.later.Len() > 0 {
			e := heap.Pop(&mb.later).(*heapEntry)
			switch {
			case e.seq != e.it.seq:
			case e.it.lastKind == transport.ConfigFault:
				s.makeReady(mb, e.it, now)
			default:
				keep = append(keep, e)
			}
		}
		mb.later = keep
		heap.Init(&mb.later)
		s.broadcast(mb)
		lifted++
	}
	s.mu.Unlock()
	if lifted > 0 {
		s.log.Info("app gets tokens again; mail held back by its credential fault is retried now", "app", app, "mailboxes", lifted)
		s.poke()
	}
}
