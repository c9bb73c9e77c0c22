package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
)

// queueAction is one acting command: the states -all looks in, the spool
// operation, and what it says when the operation worked.
type queueAction struct {
	states []queue.State
	do     func(*queue.Spool, string) (*queue.Envelope, error)
	done   string
}

var queueActions = map[string]queueAction{
	"retry":          {[]queue.State{queue.Deferred}, (*queue.Spool).Retry, "due now; serve tries it within a second or two"},
	"hold":           {[]queue.State{queue.Incoming, queue.Deferred}, (*queue.Spool).Hold, "on hold until `oauthrelay queue release`"},
	"release":        {[]queue.State{queue.Hold}, (*queue.Spool).Release, "released, due now"},
	"requeue-failed": {[]queue.State{queue.Failed}, (*queue.Spool).Requeue, "back in the queue, due now"},
	"delete":         {[]queue.State{queue.Incoming, queue.Deferred, queue.Hold, queue.Failed}, (*queue.Spool).Delete, "deleted"},
}

// selectIDs lists the messages -all acts on: those matching the filters in
// the states the action applies to.
func selectIDs(spool *queue.Spool, action string, f filter) ([]string, error) {
	envs, _, err := spool.List(queueActions[action].states...)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var ids []string
	for _, e := range envs {
		if f.match(e, now) {
			ids = append(ids, e.ID)
		}
	}
	if action == "delete" && f.states[queue.Corrupt] && f.mailbox == "" && f.client == "" && f.olderThan == 0 {
		cids, err := spool.IDs(queue.Corrupt)
		if err != nil {
			return nil, err
		}
		ids = append(ids, cids...)
	}
	return ids, nil
}

// queueAct applies action to each of ids, reporting each one; it returns
// 1 when any was not changed.
func queueAct(spool *queue.Spool, action string, ids []string, stdout, stderr io.Writer) int {
	a := queueActions[action]
	failed := 0
	for _, id := range ids {
		if _, err := a.do(spool, id); err != nil {
			failed++
			if errors.Is(err, queue.ErrNotFound) {
				err = fmt.Errorf("no message %s in the queue (delivered meanwhile? see `oauthrelay queue list`)", id)
			}
			fmt.Fprintf(stderr, "%s: not changed: %v\n", id, err)
			continue
		}
		fmt.Fprintf(stdout, "%s: %s\n", id, a.done)
	}
	if failed > 0 {
		return 1
	}
	return 0
}
