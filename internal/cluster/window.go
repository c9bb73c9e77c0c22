package cluster

import (
	"sort"
	"sync"
	"time"
)

// Limit is a count allowed in any span of time: at most Max in any Span.
// Max 0 means no limit.
type Limit struct {
	Span time.Duration
	Max  int
}

// localLog is the sliding log a relay keeps on its own: the time of every
// reservation, so that no span ever holds more than the limit (a token
// bucket would allow twice the rate across a boundary).
type localLog struct {
	mu   sync.Mutex
	keys map[string][]logEntry
}

type logEntry struct {
	at time.Time
	id string
	n  int
}

func newLocalLog() *localLog { return &localLog{keys: map[string][]logEntry{}} }

// reserve adds es[i] to keys[i] for every key, if each has room for it
// among its entries after since[i]; else it adds nothing and returns, per
// key, the earliest time at which it would have room (zero where it has).
// A reservation bigger than a whole limit goes alone into an empty span.
func (l *localLog) reserve(keys []string, limits []Limit, es []logEntry, now time.Time, since []time.Time) ([]time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	retries, ok := l.check(keys, limits, es, now, since)
	if !ok {
		return retries, false
	}
	for i, k := range keys {
		l.insert(k, es[i])
	}
	return nil, true
}

// check is reserve without adding anything. Callers hold l.mu.
func (l *localLog) check(keys []string, limits []Limit, es []logEntry, now time.Time, since []time.Time) ([]time.Time, bool) {
	retries := make([]time.Time, len(keys))
	ok := true
	for i, k := range keys {
		lim, n := limits[i], es[i].n
		entries := l.prune(k, now, lim.Span)
		c := 0
		for _, e := range entries {
			if !e.at.Before(since[i]) {
				c += e.n
			}
		}
		if c+n <= lim.Max || c == 0 && lim.Max > 0 {
			continue
		}
		free := now.Add(lim.Span)
		for _, e := range entries {
			if e.at.Before(since[i]) {
				continue
			}
			c -= e.n
			if c+n <= lim.Max {
				free = e.at.Add(lim.Span)
				break
			}
		}
		retries[i], ok = free, false
	}
	return retries, ok
}

func (l *localLog) insert(k string, e logEntry) {
	es := append(l.keys[k], e)
	sort.SliceStable(es, func(i, j int) bool { return es[i].at.Before(es[j].at) })
	l.keys[k] = es
}

// prune drops entries older than span and returns the rest, oldest first.
func (l *localLog) prune(k string, now time.Time, span time.Duration) []logEntry {
	es := l.keys[k]
	i := sort.Search(len(es), func(i int) bool { return es[i].at.After(now.Add(-span)) })
	es = es[i:]
	if len(es) == 0 {
		delete(l.keys, k)
	} else {
		l.keys[k] = es
	}
	return es
}

// settle moves id's entries to at and keeps only keeps[i] of them in
// keys[i] (0 takes the reservation back).
func (l *localLog) settle(keys []string, id string, at time.Time, keeps []int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, k := range keys {
		es := l.keys[k]
		for j := len(es) - 1; j >= 0; j-- {
			if es[j].id == id {
				l.keys[k] = append(es[:j:j], es[j+1:]...)
				if keeps[i] > 0 {
					l.insert(k, logEntry{at, id, min(keeps[i], es[j].n)})
				}
				break
			}
		}
	}
}

// mirror records entries reserved in Redis, dropping what their keys'
// spans no longer count.
func (l *localLog) mirror(keys []string, limits []Limit, es []logEntry, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, k := range keys {
		l.prune(k, now, limits[i].Span)
		l.insert(k, es[i])
	}
}

// snapshot copies every entry, to put back into Redis.
func (l *localLog) snapshot() map[string][]logEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]logEntry, len(l.keys))
	for k, es := range l.keys {
		out[k] = append([]logEntry(nil), es...)
	}
	return out
}
