package delivery

import (
	"strings"
	"time"
)

// MailboxStatus is what health and metrics show per mailbox.
type MailboxStatus struct {
	Mailbox string
	// Transport is the mailbox's configured door ("smtp", "graph",
	// "hve"); empty when the mailbox is no longer configured.
	Transport   string
	Paused      bool
	PausedUntil time.Time
	ConfigFault bool
	Reason      string
	Fix         string
	Ready       int
	Waiting     int
	Connections int
	// SenderFaults are the senders the mailbox may not send as; their
	// mail waits for the SendAs grant.
	SenderFaults []SenderFault
	// Failing counts the attempts in a row that failed for the whole
	// message with a temporary error since FailingSince; LastError is
	// the last one's reply. A delivery resets them.
	Failing      int
	FailingSince time.Time
	LastError    string
	// RestartToFix says a reload cannot apply the fix: the fault is the
	// app's token and its secret comes from ${VAR}.
	RestartToFix bool
	// RecipientsDay counts the recipients Microsoft accepted from the
	// mailbox in the last 24 hours (plus those in flight), against
	// RecipientsDayLimit, its max_recipients_per_day (0: no limit).
	RecipientsDay      int
	RecipientsDayLimit int
}

// Status reports every mailbox the scheduler has seen.
func (s *Scheduler) Status() []MailboxStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.o.Now()
	var out []MailboxStatus
	for _, mb := range s.mbx {
		tr, restart, limit := "", false, 0
		if mc := s.cfg.Mailbox(mb.addr); mc != nil {
			tr, limit = mc.Transport, mc.MaxRecipientsPerDay
			restart = mb.configFault && strings.HasPrefix(mb.pauseReason, "token:") && mc.AppRef != nil && mc.AppRef.SecretFromEnvironment()
		}
		out = append(out, MailboxStatus{
			Mailbox: mb.addr, Transport: tr, Paused: now.Before(mb.pausedUntil), PausedUntil: mb.pausedUntil,
			ConfigFault: mb.configFault, Reason: mb.pauseReason, Fix: mb.pauseFix,
			Ready: len(mb.fresh) + len(mb.retry), Waiting: mb.later.Len(), Connections: mb.conns,
			SenderFaults: senderFaultsLocked(mb),
			Failing:      mb.failing, FailingSince: mb.failingSince, LastError: mb.failingReply, RestartToFix: restart,
			RecipientsDay: mb.rcpts.count(now) + mb.rcptsInflight, RecipientsDayLimit: limit,
		})
	}
	return out
}
