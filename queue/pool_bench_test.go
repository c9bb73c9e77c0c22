package queue

import (
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// BenchmarkPrecreatePaced offers 4 KiB messages at 200 a second, as the
// latency phase of bench/run.sh does, to two spools at once, one keeping
// files made ahead of need (Options.Precreate) and one not, alternating
// which goes first so that the noise of a shared machine falls on both.
// It reports each one's median and 99th percentile time from Create to
// the end of Commit (the spool's share of the client's dot-to-250), and
// the median of Create alone.
func BenchmarkPrecreatePaced(b *testing.B) {
	var spools [2]*Spool
	for i := range spools {
		s, _, err := Open(b.TempDir(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Recover: true, Precreate: i == 1})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		go func() {
			for range s.Notify() {
			}
		}()
		spools[i] = s
	}
	lats, creates := [2][]time.Duration{}, [2][]time.Duration{}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		<-tick.C
		for k := 0; k < 2; k++ {
			i := (n + k) % 2
			t0 := time.Now()
			w, err := spools[i].Create()
			if err != nil {
				b.Fatal(err)
			}
			creates[i] = append(creates[i], time.Since(t0))
			benchCommit(b, w)
			lats[i] = append(lats[i], time.Since(t0))
		}
	}
	b.StopTimer()
	for i, name := range []string{"create", "precreate"} {
		slices.Sort(lats[i])
		slices.Sort(creates[i])
		b.ReportMetric(float64(creates[i][len(creates[i])/2].Microseconds())/1000, name+"-create-p50-ms")
		b.ReportMetric(float64(lats[i][len(lats[i])/2].Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(lats[i][len(lats[i])*99/100].Microseconds())/1000, name+"-p99-ms")
	}
}
