package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/oauthrelay/oauthrelay/config"
)

func init() {
	register("sendmail", command{summary: "a sendmail(8) for cron, PHP's mail() and scripts: submit standard input to this relay", run: runSendmail})
}

// Exit codes from sysexits.h, which sendmail's callers understand.
const (
	exUsage       = 64 // EX_USAGE: a wrong option, no recipient
	exDataErr     = 65 // EX_DATAERR: the message was refused as it is
	exNoUser      = 67 // EX_NOUSER: a recipient was refused
	exUnavailable = 69 // EX_UNAVAILABLE: the relay refused the session
	exSoftware    = 70 // EX_SOFTWARE: a bug
	exOSErr       = 71 // EX_OSERR: the system failed us
	exIOErr       = 74 // EX_IOERR: standard input could not be read
	exTempFail    = 75 // EX_TEMPFAIL: try again later
	exNoPerm      = 77 // EX_NOPERM: the sender, login or client is not allowed
	exConfig      = 78 // EX_CONFIG: the configuration is wrong or unreadable
)

// sendmailStdin is the message's source, replaced in tests.
var sendmailStdin io.Reader = os.Stdin

// invokedAs returns the arguments run should get when the binary is
// started through a link: a link named sendmail is `oauthrelay sendmail`.
func invokedAs(argv []string) []string {
	name := strings.TrimSuffix(filepath.Base(argv[0]), ".exe")
	if name == "sendmail" {
		return append([]string{"sendmail"}, argv[1:]...)
	}
	return argv[1:]
}

func runSendmail(args []string, stdout, stderr io.Writer) int {
	o, err := parseSendmailArgs(args, os.Getenv, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "oauthrelay sendmail: %v (--help lists the options)\n", err)
		return exUsage
	}
	if o.exit != nil {
		return *o.exit
	}
	sub, err := config.LoadSubmission(o.config)
	if err != nil {
		var ce *config.Error
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				fmt.Fprintf(stderr, "oauthrelay sendmail: %s\n", p)
			}
			return exConfig
		}
		fmt.Fprintf(stderr, "oauthrelay sendmail: %s: %v\n", o.config, err)
		return exConfig
	}
	m, err := readOutgoing(sendmailStdin, o)
	if err != nil {
		var de *dataError
		if errors.As(err, &de) {
			fmt.Fprintf(stderr, "oauthrelay sendmail: %v (nothing was sent)\n", err)
			return exDataErr
		}
		var oe *osError
		if errors.As(err, &oe) {
			fmt.Fprintf(stderr, "oauthrelay sendmail: %v (nothing was sent)\n", err)
			return exOSErr
		}
		fmt.Fprintf(stderr, "oauthrelay sendmail: reading the message: %v (nothing was sent)\n", err)
		return exIOErr
	}
	if len(m.rcpts) == 0 {
		fmt.Fprintln(stderr, "oauthrelay sendmail: no recipients: give them as arguments, or use -t to take them from To:, Cc: and Bcc: (nothing was sent)")
		return exUsage
	}
	if err := submit(sub, m, o, stderr); err != nil {
		var se *submitError
		if errors.As(err, &se) {
			fmt.Fprintf(stderr, "oauthrelay sendmail: %s\n", se.msg)
			return se.code
		}
		fmt.Fprintf(stderr, "oauthrelay sendmail: %v\n", err)
		return exSoftware
	}
	return 0
}
