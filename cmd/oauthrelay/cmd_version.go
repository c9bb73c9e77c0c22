package main

import (
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

func init() {
	register("version", command{summary: "print the version, the commit and the Go version (also --version)", run: runVersion})
}

// buildVersion is the version packaging/build.sh stamps into the binary
// (-ldflags "-X main.buildVersion=..."), from git describe: a package's
// binary says which package it came from, tagged or not.
var buildVersion string

// readBuildInfo is debug.ReadBuildInfo, replaced in tests.
var readBuildInfo = debug.ReadBuildInfo

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "oauthrelay version: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	bi, _ := readBuildInfo()
	fmt.Fprint(stdout, versionText(bi))
	return 0
}

// untagged is the pseudo-version the go command gives a module built from
// a repository without any version tag.
var untagged = regexp.MustCompile(`^v0\.0\.0-\d{14}-[0-9a-f]{12}(\+dirty)?$`)

// versionText describes a build from its build information (nil when the
// binary has none): the main module's version, "devel" when it was built
// without a version tag; the commit, its time and whether the tree had
// uncommitted changes; and the Go toolchain and platform.
func versionText(bi *debug.BuildInfo) string {
	version, goVersion := "devel", runtime.Version()
	settings := map[string]string{}
	if bi != nil {
		if v := bi.Main.Version; v != "" && v != "(devel)" && !untagged.MatchString(v) {
			version = v
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
	}
	if buildVersion != "" {
		version = buildVersion
	}
	var b strings.Builder
	fmt.Fprintf(&b, "oauthrelay %s\n", version)
	switch rev := settings["vcs.revision"]; {
	case rev == "":
		b.WriteString("commit:  unknown (built without version control information)\n")
	case settings["vcs.modified"] == "true":
		fmt.Fprintf(&b, "commit:  %s, with uncommitted changes\n", rev)
	default:
		fmt.Fprintf(&b, "commit:  %s\n", rev)
	}
	if t := settings["vcs.time"]; t != "" {
		fmt.Fprintf(&b, "date:    %s (commit time)\n", t)
	}
	fmt.Fprintf(&b, "go:      %s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
	return b.String()
}
