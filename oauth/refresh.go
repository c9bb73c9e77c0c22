package oauth

import (
	"context"
	"time"
)

// maxSleep caps one wait of the refresher so that clock jumps (suspend,
// NTP steps) are noticed.
const maxSleep = time.Minute

// minRefreshGap keeps the refresher from spinning on a server that issues
// tokens with absurdly short lifetimes.
const minRefreshGap = 5 * time.Second

// ResetBackoff forgets earlier failures, so the next Token call asks the
// endpoint at once. The relay calls it on reload: an admin who fixed the
// cause in Entra (consent, an uploaded certificate) should not wait out a
// backoff of up to 30 minutes.
func (s *Source) ResetBackoff() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures, s.retryAt = 0, time.Time{}
}

// Start refreshes the token in the background until ctx is done: a token is
// replaced when its remaining lifetime falls to MinTokenLifetime +
// max(1m, 10% of its lifetime), so callers rarely wait for a request. After
// failures it follows the backoff rule of the package doc.
func (s *Source) Start(ctx context.Context) {
	go s.refresher(ctx)
}

func (s *Source) refresher(ctx context.Context) {
	for {
		s.mu.Lock()
		wait := s.nextRefreshLocked()
		changed := s.changed
		// While Entra refuses the credential, watch its files: a fixed
		// one is used at once, not after a backoff of up to 30 minutes.
		poll := s.inflight == nil && wait > credentialPoll && s.lastErr != nil && credentialFault(s.lastErr)
		if poll {
			wait = credentialPoll
		}
		if s.inflight != nil || wait <= 0 {
			c := s.startLocked()
			s.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return
			}
			continue
		}
		s.mu.Unlock()
		if wait > maxSleep {
			wait = maxSleep
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-s.after(wait):
			if poll {
				s.RereadCredential()
			}
		}
	}
}

// nextRefreshLocked is how long until the refresher should fetch; <= 0
// means now.
func (s *Source) nextRefreshLocked() time.Duration {
	now := s.now()
	if s.lastErr != nil && now.Before(s.retryAt) {
		return s.retryAt.Sub(now)
	}
	if s.tok == nil {
		return 0
	}
	min := s.tok.minLeft(s.minLife)
	margin := max(time.Minute, s.tok.lifetime/10)
	// A short-lived token cannot afford the full margin: refresh halfway
	// between issue and the point where it stops being handed out.
	if spare := s.tok.lifetime - min; margin > spare/2 {
		margin = spare / 2
	}
	refreshAt := s.tok.tok.ExpiresOn.Add(-min - margin)
	if earliest := s.tok.issued.Add(minRefreshGap); refreshAt.Before(earliest) {
		refreshAt = earliest
	}
	return refreshAt.Sub(now)
}
