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

// reserve adds n under id at `at` to every key, if each has room for n
// more among its entries after since; else it adds nothing and returns the
// earliest time at which all would have room. A reservation bigger than a
// whole limit goes alone into an empty span.
func (l *localLog) reserve(keys []string, limits []Limit, id string, n int, now, at, since time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var retry time.Time
	for i, k := range keys {
		lim := limits[i]
		es := l.prune(k, now, lim.Span)
		c := 0
		for _, e := range es {
			if !e.at.Before(since) {
				c += e.n
			}
		}
		if c+n <= lim.Max || c == 0 && lim.Max > 0 {
			continue
		}
		free := now.Add(lim.Span)
		for _, e := range es {
			if e.at.Before(since) {
				continue
			}
			c -= e.n
			if c+n <= lim.Max {
				free = e.at.Add(lim.Span)
				break
			}
		}
		if free.After(retry) {
			retry = free
		}
	}
	if !retry.IsZero() {
		return retry, false
	}
	for _, k := range keys {
		l.insert(k, logEntry{at, id, n})
	}
	return time.Time{}, true
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

// settle moves id's entries to at and keeps only keep of its n (0 takes
// the reservation back).
func (l *localLog) settle(keys []string, id string, at time.Time, keep int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		es := l.keys[k]
		for i := len(es) - 1; i >= 0; i-- {
			if es[i].id == id {
				l.keys[k] = append(es[:i:i], es[i+1:]...)
				if keep > 0 {
					l.insert(k, logEntry{at, id, keep})
				}
				break
			}
		}
	}
}

// mirror records an entry reserved in Redis, dropping what its keys'
// spans no longer count.
func (l *localLog) mirror(keys []string, limits []Limit, e logEntry, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, k := range keys {
		l.prune(k, now, limits[i].Span)
		l.insert(k, e)
	}
}
