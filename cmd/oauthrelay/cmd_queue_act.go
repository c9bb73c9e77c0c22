package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
)

// selectIDs lists the messages -all acts on: those matching the filters in
// the states the action applies to.
func selectIDs(spool *queue.Spool, action string, f filter) ([]string, error) {
	var states []queue.State
	switch action {
	case "retry":
		states = []queue.State{queue.Deferred}
	case "hold":
		states = []queue.State{queue.Incoming, queue.Deferred}
	case "release":
		states = []queue.State{queue.Hold}
	case "requeue-failed":
		states = []queue.State{queue.Failed}
	case "delete":
		states = []queue.State{queue.Incoming, queue.Deferred, queue.Hold, queue.Failed}
	}
	envs, _, err := spool.List(states...)
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

func queueAct(spool *queue.Spool, action string, ids []string, stdout, stderr io.Writer) int {
	failed := 0
	for _, id := range ids {
		var err error
		var done string
		switch action {
		case "retry":
			_, err = spool.Retry(id)
			done = "due now; serve tries it within a second or two"
		case "hold":
			_, err = spool.Hold(id)
			done = "on hold until `oauthrelay queue release`"
		case "release":
			_, err = spool.Release(id)
			done = "released, due now"
		case "requeue-failed":
			_, err = spool.Requeue(id)
			done = "back in the queue, due now"
		case "delete":
			_, err = spool.Delete(id)
			done = "deleted"
		}
		if err != nil {
			failed++
			if errors.Is(err, queue.ErrNotFound) {
				err = fmt.Errorf("no message %s in the queue (delivered meanwhile? see `oauthrelay queue list`)", id)
			}
			fmt.Fprintf(stderr, "%s: not changed: %v\n", id, err)
			continue
		}
		fmt.Fprintf(stdout, "%s: %s\n", id, done)
	}
	if failed > 0 {
		return 1
	}
	return 0
}
