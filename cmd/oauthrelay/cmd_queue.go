package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"golang.org/x/term"

	"github.com/oauthrelay/oauthrelay/config"
	"github.com/oauthrelay/oauthrelay/queue"
)

func init() {
	register("queue", command{summary: "list, show, retry, hold, release, delete or requeue queued mail (safe while serve runs)", run: runQueue})
}

// Hooks for tests: where delete's confirmation is read from.
var (
	confirmIn         io.Reader = os.Stdin
	confirmIsTerminal           = func() bool { return term.IsTerminal(int(os.Stdin.Fd())) }
)

var queueUsage = `Usage: oauthrelay queue <action> [flags] [ID...]

Actions:
  list                    list queued mail (filters: -state, -mailbox, -client, -older-than; -json)
  show ID                 the envelope, every attempt with Microsoft's reply, and the headers
  retry ID...|-all        make deferred mail due now; serve picks it up within a second or two
  hold ID...|-all         stop delivering waiting mail until it is released
  release ID...|-all      make held mail due now
  requeue-failed ID...|-all
                          send failed mail back for another try, after fixing the cause
  delete ID...|-all       remove mail for good (asks first unless -yes)

Every action takes -config FILE (default ` + defaultConfig + `) to find the spool, or
-spool DIR. -all acts on every message that matches the filters. Mail being
delivered right now (active/) is never touched. Run actions that change the
queue as the user the relay runs as (for example: sudo -u oauthrelay oauthrelay queue retry -all).
`

// queueFlags are the flags every queue action understands.
type queueFlags struct {
	config, spool   string
	states          string
	mailbox, client string
	olderThan       string
	all, json, yes  bool
}

func (q *queueFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&q.config, "config", defaultConfig, "configuration file (for [spool] dir)")
	fs.StringVar(&q.spool, "spool", "", "spool directory (overrides the configuration's [spool] dir)")
	fs.StringVar(&q.states, "state", "", "only mail in these states (comma-separated: incoming, active, deferred, hold, failed, corrupt)")
	fs.StringVar(&q.mailbox, "mailbox", "", "only mail sent through this mailbox")
	fs.StringVar(&q.client, "client", "", "only mail from this [[client]] name")
	fs.StringVar(&q.olderThan, "older-than", "", "only mail queued longer than this (e.g. 30m, 1h, 2d)")
	fs.BoolVar(&q.all, "all", false, "act on every message that matches the filters")
	fs.BoolVar(&q.json, "json", false, "list: print JSON for scripts")
	fs.BoolVar(&q.yes, "yes", false, "delete: do not ask for confirmation")
}

// parseInterleaved parses flags that may come before or after positional
// arguments ("queue show ID -config F").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func runQueue(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, queueUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	action := args[0]
	switch action {
	case "list", "show", "retry", "hold", "release", "requeue-failed", "delete":
	default:
		fmt.Fprintf(stderr, "oauthrelay queue: unknown action %q\n\n%s", action, queueUsage)
		return 2
	}
	fs := newFlags("queue "+action, stderr)
	var q queueFlags
	q.register(fs)
	ids, err := parseInterleaved(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	f, err := q.filter()
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay queue %s: %v\n", action, err)
		return 2
	}
	spool, dir, err := q.openSpool(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay queue %s: %v\n", action, err)
		return 1
	}
	switch action {
	case "list":
		if len(ids) > 0 {
			fmt.Fprintf(stderr, "oauthrelay queue list: unexpected argument %q (use show ID for one message)\n", ids[0])
			return 2
		}
		return queueList(spool, f, q.json, stdout, stderr)
	case "show":
		if len(ids) != 1 {
			fmt.Fprintln(stderr, "oauthrelay queue show: name exactly one message id (see `oauthrelay queue list`)")
			return 2
		}
		return queueShow(spool, ids[0], stdout, stderr)
	}
	if err := checkSpoolOwner(dir); err != nil {
		fmt.Fprintf(stderr, "oauthrelay queue %s: %v\n", action, err)
		return 1
	}
	if q.all == (len(ids) > 0) {
		fmt.Fprintf(stderr, "oauthrelay queue %s: name message ids, or -all (with optional filters) for every matching message\n", action)
		return 2
	}
	if q.all {
		ids, err = selectIDs(spool, action, f)
		if err != nil {
			fmt.Fprintf(stderr, "oauthrelay queue %s: %v\n", action, err)
			return 1
		}
		if len(ids) == 0 {
			fmt.Fprintf(stdout, "no message to %s\n", strings.TrimSuffix(action, "-failed"))
			return 0
		}
	}
	if action == "delete" && !q.yes {
		if !confirmIsTerminal() {
			fmt.Fprintf(stderr, "oauthrelay queue delete: refusing to delete %d message(s) without confirmation: standard input is not a terminal; add -yes\n", len(ids))
			return 1
		}
		fmt.Fprintf(stderr, "Delete %d message(s) for good? Their senders are not told. [y/N] ", len(ids))
		line, _ := bufio.NewReader(confirmIn).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			fmt.Fprintln(stderr, "nothing deleted")
			return 1
		}
	}
	return queueAct(spool, action, ids, stdout, stderr)
}

// openSpool finds the spool from -spool or the configuration. The full
// configuration is not needed, so a file whose secrets are not available
// in this shell (${VAR} from the service's environment) still works.
func (q *queueFlags) openSpool(stderr io.Writer) (*queue.Spool, string, error) {
	dir := q.spool
	if dir == "" {
		cfg, err := config.Load(q.config)
		if err == nil {
			dir = cfg.Spool.Dir
		} else {
			var raw struct {
				Spool struct {
					Dir string `toml:"dir"`
				} `toml:"spool"`
			}
			if _, terr := toml.DecodeFile(q.config, &raw); terr != nil {
				return nil, "", fmt.Errorf("cannot read %s: %v (give the spool directly with -spool DIR)", q.config, err)
			}
			dir = raw.Spool.Dir
			if dir == "" {
				dir = config.DefaultSpoolDir
			}
		}
	}
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, "", fmt.Errorf("there is no spool at %s: serve has not run yet, or [spool] dir in %s is not the one serve uses", dir, q.config)
	case errors.Is(err, fs.ErrPermission):
		return nil, "", fmt.Errorf("cannot read the spool %s: permission denied; run this as the relay's user (for example: sudo -u oauthrelay oauthrelay queue ...)", dir)
	case err != nil:
		return nil, "", fmt.Errorf("spool %s: %v", dir, err)
	case !st.IsDir():
		return nil, "", fmt.Errorf("spool %s is not a directory", dir)
	}
	for _, s := range queue.States {
		if _, err := os.Stat(filepath.Join(dir, string(s))); err != nil {
			if errors.Is(err, fs.ErrPermission) {
				return nil, "", fmt.Errorf("cannot read the spool %s: permission denied; run this as the relay's user (for example: sudo -u oauthrelay oauthrelay queue ...)", dir)
			}
			return nil, "", fmt.Errorf("%s does not look like an oauthrelay spool (no %s/ directory)", dir, s)
		}
	}
	// Recover stays off: only serve recovers, and it may be running.
	sp, _, err := queue.Open(dir, queue.Options{Existing: true, Logger: newLogger(config.Log{Level: "error"}, stderr)})
	return sp, dir, err
}

// filter selects envelopes for list and -all.
type filter struct {
	states    map[queue.State]bool
	mailbox   string
	client    string
	olderThan time.Duration
}

func (q *queueFlags) filter() (filter, error) {
	f := filter{mailbox: q.mailbox, client: q.client}
	if q.states != "" {
		f.states = map[queue.State]bool{}
		for _, s := range strings.Split(q.states, ",") {
			st, err := queue.ParseState(strings.TrimSpace(s))
			if err != nil {
				return f, err
			}
			f.states[st] = true
		}
	}
	if q.olderThan != "" {
		d, err := config.ParseDuration(q.olderThan)
		if err != nil {
			return f, fmt.Errorf("-older-than: %v", err)
		}
		f.olderThan = d
	}
	return f, nil
}

func (f filter) match(e *queue.Envelope, now time.Time) bool {
	if f.states != nil && !f.states[e.State] {
		return false
	}
	if f.mailbox != "" && !strings.EqualFold(f.mailbox, e.Mailbox) {
		return false
	}
	if f.client != "" && f.client != e.Client {
		return false
	}
	return f.olderThan == 0 || e.Age(now) > f.olderThan
}
