package main

import (
	"fmt"
	"io"
	"strings"
)

// sendmailOpts are the options of `oauthrelay sendmail`, parsed the way
// sendmail(8) callers write them: "-fADDR" or "-f ADDR", "-oi", recipients
// after the options (or mixed with them, as Postfix allows).
type sendmailOpts struct {
	config     string
	extract    bool   // -t: recipients from To:, Cc: and Bcc:
	ignoreDots bool   // -i, -oi: a line with a single dot does not end the input
	from       string // -f, -r: the envelope sender
	fromSet    bool
	fullName   string // -F: the sender's full name for a From: the command adds
	verbose    bool   // -v: show each step on standard error
	recipients []string
	// exit, when set, ends the command with this code without sending
	// (help, -bi, -q).
	exit *int
}

// sendmailUsage is printed by -h and --help.
const sendmailUsage = `Usage: oauthrelay sendmail [-config FILE] [-t] [-i] [-f SENDER] [-F NAME] [-v] [recipient...]

Reads a message on standard input and submits it to this host's relay as the
[[client]] named in the configuration's [sendmail] section, so the client's
sender policy applies; a link named sendmail to the binary behaves the same.
Nothing is queued by the command itself: exit 0 means the relay answered 250.

Flags:
  -config FILE  the relay's configuration (default $OAUTHRELAY_CONFIG, else %s)
  -t            take the recipients from To:, Cc: and Bcc: too (Bcc: is removed)
  -i, -oi       a line with a single dot does not end the message
  -f SENDER     the envelope sender (also -r); default: the From: address,
                else LOGIN@HOSTNAME
  -F NAME       the sender's full name, for the From: added when there is none
  -v            show each step of the submission on standard error
  -B 8BITMIME   declare an 8-bit body
Accepted and ignored, as by other mailers: -bm, -od*, -oe*, -om, -N, -R, -V,
-X, -L, -h N, -p, -G, -U, -n, -m. Any other -o option is ignored with a
warning. -bi and -q do nothing (the relay has no aliases and runs its own
queue). -bs, -bp, -bv and -bd are refused.

Exit codes (sysexits.h): 0 sent; 64 usage; 65 the message was refused as it
is; 67 a recipient was refused; 69 the relay is unavailable; 75 try again
later; 77 the sender, login or client is not allowed; 78 configuration.
`

// parseSendmailArgs parses args; a problem is returned with EX_USAGE.
func parseSendmailArgs(args []string, getenv func(string) string, stderr io.Writer) (*sendmailOpts, error) {
	o := &sendmailOpts{config: defaultConfig}
	if c := getenv("OAUTHRELAY_CONFIG"); c != "" {
		o.config = c
	}
	stop := func(code int) { o.exit = &code }
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			o.recipients = append(o.recipients, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			o.recipients = append(o.recipients, a)
			continue
		}
		// value returns the option's argument: the rest of a ("-fADDR")
		// or the next argument ("-f ADDR").
		value := func(rest string) (string, error) {
			if rest != "" {
				return rest, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("option %s needs a value", a)
			}
			i++
			return args[i], nil
		}
		switch {
		case a == "--help" || a == "-help" || (a == "-h" && i == len(args)-1):
			fmt.Fprintf(stderr, sendmailUsage, defaultConfig)
			stop(0)
			return o, nil
		case a == "-config" || a == "--config":
			v, err := value("")
			if err != nil {
				return nil, err
			}
			o.config = v
			continue
		case strings.HasPrefix(a, "-config=") || strings.HasPrefix(a, "--config="):
			o.config = a[strings.IndexByte(a, '=')+1:]
			continue
		}
		flag, rest := a[1], a[2:]
		switch flag {
		case 't', 'i', 'v', 'm', 'n', 'U', 'G':
			// Single-letter switches, possibly grouped ("-ti").
			for _, c := range a[1:] {
				switch c {
				case 't':
					o.extract = true
				case 'i':
					o.ignoreDots = true
				case 'v':
					o.verbose = true
				case 'm', 'n', 'U', 'G':
				default:
					return nil, fmt.Errorf("unknown option -%c in %s", c, a)
				}
			}
		case 'f', 'r':
			v, err := value(rest)
			if err != nil {
				return nil, err
			}
			o.from, o.fromSet = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(v), "<"), ">"), true
		case 'F':
			v, err := value(rest)
			if err != nil {
				return nil, err
			}
			o.fullName = v
		case 'B':
			// The value is taken and ignored: submit declares 8BITMIME
			// whenever the relay offers it, since scripts send 8-bit
			// text without saying so.
			if _, err := value(rest); err != nil {
				return nil, err
			}
		case 'o':
			switch {
			case rest == "i":
				o.ignoreDots = true
			case rest == "m", strings.HasPrefix(rest, "d"), strings.HasPrefix(rest, "e"):
				// Delivery and error modes: the relay queues and reports.
			case rest == "":
				fmt.Fprintln(stderr, "oauthrelay sendmail: warning: ignoring -o without an option")
			default:
				fmt.Fprintf(stderr, "oauthrelay sendmail: warning: ignoring unknown option %s\n", a)
			}
		case 'O':
			v, err := value(rest)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(stderr, "oauthrelay sendmail: warning: ignoring option -O %s\n", v)
		case 'N', 'R', 'V', 'X', 'L', 'h', 'p', 'A':
			// DSN requests, envelope id, log file, tag, hop count,
			// protocol, submission mode: meaningless for a relay that
			// reports by its own rules.
			if _, err := value(rest); err != nil {
				return nil, err
			}
		case 'C':
			v, err := value(rest)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(stderr, "oauthrelay sendmail: warning: ignoring -C %s (sendmail's own configuration); the relay's is -config FILE\n", v)
		case 'q':
			fmt.Fprintln(stderr, "oauthrelay sendmail: nothing to do: the relay runs its own queue (oauthrelay queue list shows it)")
			stop(0)
			return o, nil
		case 'b':
			switch rest {
			case "m", "":
			case "i":
				fmt.Fprintln(stderr, "oauthrelay sendmail: nothing to do: the relay has no aliases")
				stop(0)
				return o, nil
			case "p":
				return nil, fmt.Errorf("-bp (list the queue) is not a sendmail mode here: run oauthrelay queue list")
			default:
				return nil, fmt.Errorf("-b%s is not supported: this command only reads a message on standard input and submits it (-bm)", rest)
			}
		default:
			return nil, fmt.Errorf("unknown option %s", a)
		}
	}
	return o, nil
}
