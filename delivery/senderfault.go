package delivery

import (
	"sort"
	"strings"
	"time"
)

// senderFault is a sender address the mailbox may not send as: Exchange
// or Graph refused a missing SendAs grant. It holds back only that
// sender's mail; the mailbox's other senders go on.
type senderFault struct {
	Reply, Fix string
	Since      time.Time
}

// SenderFault is one sender a mailbox may not send as, for health checks.
type SenderFault struct {
	Sender, Reply, Fix string
	Since              time.Time
}

// noteSenderFault records that mb may not send as from; it reports whether
// this is news (to be logged) rather than another message finding out.
func (s *Scheduler) noteSenderFault(mb *mbox, from, reply, fix string) bool {
	from = strings.ToLower(from)
	s.mu.Lock()
	defer s.mu.Unlock()
	if mb.senderFaults == nil {
		mb.senderFaults = map[string]senderFault{}
	}
	_, known := mb.senderFaults[from]
	if !known {
		mb.senderFaults[from] = senderFault{Reply: reply, Fix: fix, Since: s.o.Now()}
	}
	return !known
}

// clearSenderFault forgets a sender fault: mail from it got through.
func (s *Scheduler) clearSenderFault(mb *mbox, from string) {
	from = strings.ToLower(from)
	s.mu.Lock()
	_, known := mb.senderFaults[from]
	delete(mb.senderFaults, from)
	s.mu.Unlock()
	if known {
		s.log.Info("mailbox may send as this sender again", "mailbox", mb.addr, "sender", from)
	}
}

// senderFaultsLocked lists a mailbox's sender faults, by sender.
func senderFaultsLocked(mb *mbox) []SenderFault {
	var out []SenderFault
	for from, f := range mb.senderFaults {
		out = append(out, SenderFault{Sender: from, Reply: f.Reply, Fix: f.Fix, Since: f.Since})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sender < out[j].Sender })
	return out
}
