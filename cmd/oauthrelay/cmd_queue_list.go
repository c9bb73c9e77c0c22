package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/oauthrelay/oauthrelay/queue"
)

// listed is one row of `queue list -json`.
type listed struct {
	State queue.State `json:"state"`
	// AgeSeconds is how long the message has been queued.
	AgeSeconds int64 `json:"age_seconds"`
	*queue.Envelope
	// Error is set for an envelope that cannot be read (state corrupt).
	Error string `json:"error,omitempty"`
}

func queueList(spool *queue.Spool, f filter, asJSON bool, stdout, stderr io.Writer) int {
	now := time.Now()
	envs, bad, err := spool.List()
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay queue list: %v\n", err)
		return 1
	}
	rows := []listed{}
	for _, e := range envs {
		if f.match(e, now) {
			rows = append(rows, listed{State: e.State, AgeSeconds: int64(e.Age(now).Seconds()), Envelope: e})
		}
	}
	noFilter := f.mailbox == "" && f.client == "" && f.olderThan == 0
	for _, b := range bad {
		st, id, _ := strings.Cut(b, "/")
		if noFilter && (f.states == nil || f.states[queue.State(st)]) {
			rows = append(rows, listed{State: queue.State(st), Envelope: &queue.Envelope{ID: id},
				Error: "the envelope cannot be read; inspect " + messageFile(spool, id)})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			fmt.Fprintf(stderr, "oauthrelay queue list: %v\n", err)
			return 1
		}
		return 0
	}
	if len(rows) == 0 {
		fmt.Fprintln(stdout, "the queue is empty")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tAGE\tSIZE\tMAILBOX\tCLIENT\tRCPTS\tTRIES\tNEXT\tLAST REPLY")
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", r.ID, r.State, r.Error)
			continue
		}
		e := r.Envelope
		next := "-"
		switch e.State {
		case queue.Incoming:
			next = "now"
		case queue.Active:
			next = "sending"
		case queue.Deferred:
			if d := time.Until(e.NextAttempt); d > 0 {
				next = "in " + shortDur(d)
			} else {
				next = "now"
			}
		}
		last := e.LastError
		if e.State == queue.Failed && e.FailReason != "" {
			last = e.FailReason
		}
		if len(e.Attempts) > 0 && last == "" {
			last = e.Attempts[len(e.Attempts)-1].Reply
		}
		if len(last) > 70 {
			last = last[:69] + "…"
		}
		mailbox := e.Mailbox
		if n := len(e.Attempts); n > 0 && e.Attempts[n-1].Transport != "" && e.Attempts[n-1].Transport != "smtp" {
			// Say when mail waits on Graph or HVE rather than SMTP AUTH.
			mailbox += " (" + e.Attempts[n-1].Transport + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%d\t%s\t%s\n", e.ID, e.State, shortDur(e.Age(time.Now())), humanBytes(e.Size),
			mailbox, e.Client, len(e.Pending()), len(e.Recipients), len(e.Attempts), next, last)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d message(s)\n", len(rows))
	return 0
}

func queueShow(spool *queue.Spool, id string, stdout, stderr io.Writer) int {
	e, err := spool.Find(id)
	if errors.Is(err, queue.ErrNotFound) {
		fmt.Fprintf(stderr, "oauthrelay queue show: no message %s in the queue (delivered meanwhile? see `oauthrelay queue list`)\n", id)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay queue show: %v\n", err)
		return 1
	}
	now := time.Now()
	// Looked up once for the two lines that name it (MessagePath searches
	// the states again: Find does not say where the file is).
	file := messageFile(spool, e.ID)
	fmt.Fprintf(stdout, "id:           %s\n", e.ID)
	fmt.Fprintf(stdout, "state:        %s (%s)\n", e.State, file)
	fmt.Fprintf(stdout, "received:     %s (%s ago)\n", e.Received.Local().Format(time.RFC3339), shortDur(e.Age(now)))
	fmt.Fprintf(stdout, "client:       %s", e.Client)
	if e.RemoteAddr != "" {
		fmt.Fprintf(stdout, " from %s", e.RemoteAddr)
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stdout, "mailbox:      %s\n", e.Mailbox)
	fmt.Fprintf(stdout, "mail from:    <%s>\n", e.MailFrom)
	fmt.Fprintf(stdout, "size:         %s\n", humanBytes(e.Size))
	if e.Bounce {
		fmt.Fprintln(stdout, "bounce:       yes (a delivery status notification made by the relay)")
	}
	if e.State == queue.Deferred || e.State == queue.Incoming {
		fmt.Fprintf(stdout, "next attempt: %s\n", e.NextAttempt.Local().Format(time.RFC3339))
	}
	// A failed message's last deferral is older than what failed it,
	// which fail_reason says.
	if e.LastError != "" && e.State != queue.Failed {
		fmt.Fprintf(stdout, "last error:   %s\n", e.LastError)
	}
	if e.FailReason != "" {
		fmt.Fprintf(stdout, "failed:       %s\n", e.FailReason)
	}
	if len(e.Notified) > 0 {
		// Notified lists the recipients a DSN was sent about, to the
		// envelope sender.
		to := "<" + e.MailFrom + ">"
		if e.MailFrom == "" {
			to = "no one (no envelope sender)"
		}
		fmt.Fprintf(stdout, "DSN sent to:  %s, about %s\n", to, strings.Join(e.Notified, ", "))
	}
	fmt.Fprintln(stdout, "\nrecipients:")
	for _, r := range e.Recipients {
		fmt.Fprintf(stdout, "  %-9s %s", r.State, r.Address)
		if r.Reply != "" {
			fmt.Fprintf(stdout, "  %s", r.Reply)
		}
		fmt.Fprintln(stdout)
	}
	fmt.Fprintf(stdout, "\nattempts (%d):\n", len(e.Attempts))
	for i, a := range e.Attempts {
		via := ""
		if a.Transport != "" {
			via = ", via " + a.Transport
		}
		fmt.Fprintf(stdout, "  %d. %s  %-12s %s  (%s%s)\n", i+1, a.At.Local().Format(time.RFC3339), a.Result, a.Reply, time.Duration(a.Duration)*time.Millisecond, via)
		if len(a.Recipients) > 0 {
			fmt.Fprintf(stdout, "     for %s\n", strings.Join(a.Recipients, ", "))
		}
	}
	fmt.Fprintf(stdout, "\nheaders (%s):\n", file)
	body, _, err := spool.BodyOf(e)
	if err != nil {
		fmt.Fprintf(stdout, "  (cannot read the message body: %v)\n", err)
		return 0
	}
	defer body.Close()
	br := bufio.NewReader(io.LimitReader(body, 256<<10))
	for {
		line, err := br.ReadString('\n')
		trimmed := strings.TrimRight(line, "\r\n")
		if trimmed == "" {
			break
		}
		fmt.Fprintf(stdout, "  %s\n", trimmed)
		if err != nil {
			break
		}
	}
	return 0
}

func shortDur(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}

func humanBytes(n int64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%dB", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.1fkB", float64(n)/1000)
	}
	return fmt.Sprintf("%.1fMB", float64(n)/1e6)
}

// messageFile names the file that holds message id, for an operator.
func messageFile(spool *queue.Spool, id string) string {
	p, err := spool.MessagePath(id)
	if err != nil {
		return filepath.Join(spool.Dir(), "*", id+".eml") + " (" + err.Error() + ")"
	}
	return p
}
