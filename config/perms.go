package config

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
)

// inlineSecret is a secret written in the configuration file itself: a
// client_secret that is not all ${VAR}, or a password_hash.
type inlineSecret struct {
	line   int
	key    string
	what   string // "app contoso's client_secret"
	secret bool   // a credential itself, not a hash of one
}

// inline records a secret written in the file, where it was written.
func (v *validator) inline(line int, key, what string, secret bool) {
	v.c.inline = append(v.c.inline, inlineSecret{line, key, what, secret})
}

// warnReadableFile warns when the configuration file at path holds a
// secret inline and every user on this machine may read it, as a file
// copied with the default umask can. Group-readable is what 0640
// root:oauthrelay gives the relay, so only "others" count, as for the
// files the configuration points at. Windows has no such mode bits.
func (c *Config) warnReadableFile(path string) {
	if len(c.inline) == 0 || runtime.GOOS == "windows" {
		return
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm()&0o004 == 0 {
		return
	}
	var what []string
	secret, hash := false, false
	for _, s := range c.inline {
		what = append(what, s.what)
		secret = secret || s.secret
		hash = hash || !s.secret
	}
	msg := fmt.Sprintf("%s is readable by every user on this machine (mode %04o) and holds %s", path, st.Mode().Perm(), strings.Join(what, ", "))
	if hash {
		msg += "; anyone who reads a password hash can guess the password offline"
	}
	fix := fmt.Sprintf("chmod 600 %s, or chmod 640 with the relay's group (chown root:oauthrelay %s)", path, path)
	if secret {
		fix += ", or move the secret out of this file: client_secret_file (0600), or client_secret = \"${VAR}\" from the service's environment"
	}
	c.Warnings = append(c.Warnings, Problem{File: path, Line: c.inline[0].line, Key: c.inline[0].key, Msg: msg, Fix: fix})
	sortProblems(c.Warnings)
}

// sortProblems orders problems top to bottom by line (those of the whole
// file, line 0, first), then by key, so that they read like the file.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Key < ps[j].Key
	})
}
