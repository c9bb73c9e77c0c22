package delivery

import (
	"strings"
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
	"github.com/oauthrelay/oauthrelay/transport"
)

func envWith(addrs ...string) *queue.Envelope {
	env := &queue.Envelope{ID: "x", Received: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)}
	for _, a := range addrs {
		env.Recipients = append(env.Recipients, &queue.Recipient{Address: a, State: queue.RcptPending})
	}
	return env
}

func verdict(k transport.Kind, reply string) transport.Verdict {
	return transport.Verdict{Kind: k, Reply: reply}
}

func TestApplyResult(t *testing.T) {
	now := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	throttle := transport.Verdict{Kind: transport.Throttled, Reply: "429 ApplicationThrottled", Wait: 5 * time.Second, AppWide: true}
	for _, tc := range []struct {
		name      string
		rcpts     []string
		done      []string // recipients already delivered before this attempt
		res       transport.Result
		kind      transport.Kind
		result    string
		reply     string
		delivered int
		failed    []string
		states    map[string]string
		wait      time.Duration
		appWide   bool
	}{
		{name: "all delivered", rcpts: []string{"a@x", "b@x"},
			res:  transport.Result{Reply: "2.0.0 OK <id>", Rcpts: map[string]transport.Verdict{"a@x": verdict(transport.Delivered, "250 2.0.0 OK <id>"), "b@x": verdict(transport.Delivered, "250 2.0.0 OK <id>")}},
			kind: transport.Delivered, result: "delivered", reply: "250 2.0.0 OK <id>", delivered: 2,
			states: map[string]string{"a@x": queue.RcptDelivered, "b@x": queue.RcptDelivered}},
		{name: "whole message deferred", rcpts: []string{"a@x", "b@x"},
			res:  transport.Result{Msg: &transport.Verdict{Kind: transport.Transient, Reply: "451 4.3.0 try later"}},
			kind: transport.Transient, result: "deferred", reply: "451 4.3.0 try later",
			states: map[string]string{"a@x": queue.RcptPending, "b@x": queue.RcptPending}},
		{name: "one refused for good, one delivered", rcpts: []string{"a@x", "b@x"},
			res:  transport.Result{Reply: "ok", Rcpts: map[string]transport.Verdict{"a@x": verdict(transport.Delivered, "250 ok"), "b@x": verdict(transport.Permanent, "550 5.1.1 unknown")}},
			kind: transport.Permanent, result: "partial", reply: "550 5.1.1 unknown", delivered: 1, failed: []string{"b@x"},
			states: map[string]string{"a@x": queue.RcptDelivered, "b@x": queue.RcptFailed}},
		{name: "DATA failed after a RCPT refusal: the refused keeps its own verdict", rcpts: []string{"a@x", "b@x"},
			res: transport.Result{Msg: &transport.Verdict{Kind: transport.Transient, Reply: "451 4.4.0 dropped"},
				Rcpts: map[string]transport.Verdict{"b@x": verdict(transport.Permanent, "550 5.1.1 unknown")}},
			kind: transport.Transient, result: "deferred", reply: "451 4.4.0 dropped", failed: []string{"b@x"},
			states: map[string]string{"a@x": queue.RcptPending, "b@x": queue.RcptFailed}},
		{name: "already delivered recipients are left alone", rcpts: []string{"a@x", "b@x"}, done: []string{"a@x"},
			res:  transport.Result{Reply: "ok", Rcpts: map[string]transport.Verdict{"b@x": verdict(transport.Delivered, "250 ok")}},
			kind: transport.Delivered, result: "delivered", reply: "250 ok", delivered: 1,
			states: map[string]string{"a@x": queue.RcptDelivered, "b@x": queue.RcptDelivered}},
		{name: "a throttle carries its wait and scope", rcpts: []string{"a@x"},
			res:  transport.Result{Msg: &throttle},
			kind: transport.Throttled, result: "throttled", reply: "429 ApplicationThrottled", wait: 5 * time.Second, appWide: true,
			states: map[string]string{"a@x": queue.RcptPending}},
		{name: "per-recipient trouble only: the first such reply", rcpts: []string{"a@x", "b@x"},
			res:  transport.Result{Rcpts: map[string]transport.Verdict{"a@x": verdict(transport.Transient, "450 4.2.0 busy"), "b@x": verdict(transport.Transient, "451 other")}},
			kind: transport.Transient, result: "deferred", reply: "450 4.2.0 busy",
			states: map[string]string{"a@x": queue.RcptPending, "b@x": queue.RcptPending}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := envWith(tc.rcpts...)
			for _, r := range env.Recipients {
				for _, d := range tc.done {
					if r.Address == d {
						r.State = queue.RcptDelivered
					}
				}
			}
			a := applyResult(env, tc.res, now)
			if a.Kind != tc.kind || a.Result != tc.result || a.Reply != tc.reply || a.Delivered != tc.delivered || a.Wait != tc.wait || a.AppWide != tc.appWide {
				t.Fatalf("got kind %v result %q reply %q delivered %d wait %v appWide %v", a.Kind, a.Result, a.Reply, a.Delivered, a.Wait, a.AppWide)
			}
			var failed []string
			for _, r := range a.NewlyFailed {
				failed = append(failed, r.Address)
			}
			if strings.Join(failed, ",") != strings.Join(tc.failed, ",") {
				t.Fatalf("newly failed %v, want %v", failed, tc.failed)
			}
			for _, r := range env.Recipients {
				if r.State != tc.states[r.Address] {
					t.Errorf("%s: state %v, want %v", r.Address, r.State, tc.states[r.Address])
				}
			}
		})
	}
}

func TestNextAttempt(t *testing.T) {
	recv := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	pol := queue.RetryPolicy{Min: time.Minute, Max: time.Hour, MaxAge: 48 * time.Hour}
	paused := recv.Add(2*time.Hour + 10*time.Minute)
	for _, tc := range []struct {
		name    string
		kind    transport.Kind
		now     time.Time
		tries   int
		next    time.Time
		expired bool
	}{
		{"transient: the retry policy", transport.Transient, recv.Add(time.Hour), 1, recv.Add(time.Hour + time.Minute), false},
		{"transient, third try", transport.Transient, recv.Add(time.Hour), 3, recv.Add(time.Hour + 4*time.Minute), false},
		{"config fault waits out the pause", transport.ConfigFault, recv.Add(2 * time.Hour), 1, paused, false},
		{"config fault never expires", transport.ConfigFault, recv.Add(100 * time.Hour), 9, paused, false},
		{"throttle waits out the pause", transport.Throttled, recv.Add(2 * time.Hour), 1, paused, false},
		{"throttle counts toward max_age", transport.Throttled, recv.Add(49 * time.Hour), 9, paused, true},
		{"quota waits a day", transport.Quota, recv.Add(time.Hour), 1, recv.Add(25 * time.Hour), false},
		{"quota never past max_age", transport.Quota, recv.Add(40 * time.Hour), 1, recv.Add(48 * time.Hour), false},
		{"transient past max_age gives up", transport.Transient, recv.Add(48 * time.Hour), 5, recv.Add(48 * time.Hour), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := envWith("a@x")
			env.Received = recv
			env.Attempts = make([]queue.Attempt, tc.tries)
			next, expired := nextAttempt(tc.kind, env, pol, tc.now, paused, 0.5)
			if !next.Equal(tc.next) || expired != tc.expired {
				t.Fatalf("next %v expired %v, want %v %v", next, expired, tc.next, tc.expired)
			}
		})
	}
}

func TestGiveUp(t *testing.T) {
	env := envWith("a@x", "b@x")
	env.Recipients[0].State = queue.RcptDelivered
	env.Recipients[1].Reply = "451 4.3.0 later"
	got := giveUp(env, 48*time.Hour)
	if len(got) != 1 || got[0].Address != "b@x" || got[0].State != queue.RcptFailed {
		t.Fatalf("gave up %+v", got)
	}
	if want := "gave up after 48h0m0s in the queue; last reply: 451 4.3.0 later"; got[0].Reply != want {
		t.Fatalf("reply %q, want %q", got[0].Reply, want)
	}
}
