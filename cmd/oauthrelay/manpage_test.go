package main

import (
	"os"
	"strings"
	"testing"
)

// TestManPageNamesEveryCommand: the man page the packages install
// (packaging/oauthrelay.8) has an entry for every command the binary
// lists, so that it cannot silently fall behind.
func TestManPageNamesEveryCommand(t *testing.T) {
	b, err := os.ReadFile("../../packaging/oauthrelay.8")
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for name, c := range commands {
		if c.hidden {
			continue
		}
		// roff escapes the hyphen: hash-password is hash\-password.
		entry := "\n.B " + strings.ReplaceAll(name, "-", `\-`)
		if !strings.Contains(page, entry+"\n") && !strings.Contains(page, entry+" ") && !strings.Contains(page, entry+`\f`) {
			t.Errorf("packaging/oauthrelay.8 has no entry (%q) for the command %s", entry, name)
		}
	}
}
