// Command vulncheck is the helper of .ci/govulncheck.sh. It lives under .ci/,
// which ./... does not match, so it is neither part of the relay nor of its
// scan; it uses the standard library only.
//
//	vulncheck probe URL            is URL a Go vulnerability database answering now?
//	vulncheck checkdb DIR          is DIR a usable database (an index with entries)?
//	vulncheck report JSON DEPS     judge govulncheck -format json output; DEPS is
//	                               the output of go list -deps ./...
//	vulncheck addentry DIR ID MODULE FIXED PACKAGE SYMBOL
//	                               add a fabricated entry (for govulncheck_test.sh)
package main

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// A real database has thousands of entries (4291 on 2026-08-21) for well over
// a thousand modules; anything far below that is a broken or truncated copy.
const (
	minIDs     = 1000
	minModules = 300
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: vulncheck probe|checkdb|report|addentry ...")
	}
	var err error
	switch args := os.Args[2:]; os.Args[1] {
	case "probe":
		err = probe(args)
	case "checkdb":
		err = checkDB(args)
	case "report":
		err = report(args)
	case "addentry":
		err = addEntry(args)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "vulncheck:", msg)
	os.Exit(1)
}

func probe(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: probe URL")
	}
	c := http.Client{Timeout: 15 * time.Second}
	resp, err := c.Get(strings.TrimSuffix(args[0], "/") + "/index/db.json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", args[0], resp.Status)
	}
	var db struct{ Modified string }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&db); err != nil || db.Modified == "" {
		return fmt.Errorf("%s/index/db.json is not a vulnerability database index (%v)", args[0], err)
	}
	fmt.Printf("database %s answers (modified %s)\n", args[0], db.Modified)
	return nil
}

// readJSON reads DIR/name, or DIR/name.gz, into v.
func readJSON(dir, name string, v any) error {
	p := filepath.Join(dir, name)
	f, err := os.Open(p)
	var r io.Reader = f
	if errors.Is(err, os.ErrNotExist) {
		if f, err = os.Open(p + ".gz"); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("neither %s nor %s.gz exists", p, p)
		} else if err == nil {
			if r, err = gzip.NewReader(f); err != nil {
				f.Close()
				return fmt.Errorf("%s.gz: %v", p, err)
			}
		}
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := json.NewDecoder(r).Decode(v); err != nil {
		return fmt.Errorf("%s: %v", p, err)
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func checkDB(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: checkdb DIR")
	}
	dir := args[0]
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("no vulnerability database at %s", dir)
	}
	var db struct{ Modified string }
	if err := readJSON(dir, "index/db.json", &db); err != nil || db.Modified == "" {
		return fmt.Errorf("%s has no usable index/db.json (%v)", dir, err)
	}
	var mods []struct {
		Path  string
		Vulns []struct{ ID string }
	}
	if err := readJSON(dir, "index/modules.json", &mods); err != nil {
		return fmt.Errorf("%s has no usable index/modules.json(.gz): %v", dir, err)
	}
	var vulns []struct{ ID string }
	if err := readJSON(dir, "index/vulns.json", &vulns); err != nil {
		return fmt.Errorf("%s has no usable index/vulns.json(.gz): %v", dir, err)
	}
	if len(vulns) < minIDs || len(mods) < minModules {
		return fmt.Errorf("%s lists %d entries for %d modules; a real database has thousands (at least %d entries, %d modules expected)", dir, len(vulns), len(mods), minIDs, minModules)
	}
	stdlib := 0
	ids := map[string]bool{}
	for _, m := range mods {
		if m.Path == "stdlib" {
			stdlib = len(m.Vulns)
		}
		for _, v := range m.Vulns {
			ids[v.ID] = true
		}
	}
	if stdlib == 0 {
		return fmt.Errorf("%s/index/modules.json has no entry for the standard library", dir)
	}
	for _, v := range vulns {
		ids[v.ID] = true
	}
	var missing []string
	for id := range ids {
		if !exists(filepath.Join(dir, "ID", id+".json")) && !exists(filepath.Join(dir, "ID", id+".json.gz")) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%s: the index names %d entries missing from ID/ (%s ...)", dir, len(missing), missing[0])
	}
	fmt.Printf("database %s: %d entries, %d modules (%d for the standard library), modified %s\n", dir, len(vulns), len(mods), stdlib, db.Modified)
	return nil
}

// The govulncheck -format json stream (protocol v1.0.0).
type frame struct {
	Module, Version, Package, Function, Receiver string
	Position                                     *struct {
		Filename     string
		Line, Column int
	}
}

type entry struct {
	ID       string
	Summary  string
	Affected []struct {
		Package struct{ Name string }
		Ranges  []struct {
			Events []map[string]string
		}
		EcosystemSpecific struct {
			Imports []struct {
				Path    string
				Symbols []string
			}
		} `json:"ecosystem_specific"`
	}
}

type message struct {
	Config *struct {
		ScannerVersion string `json:"scanner_version"`
		DB             string
		DBLastModified string `json:"db_last_modified"`
		ScanLevel      string `json:"scan_level"`
	}
	OSV     *entry
	Finding *struct {
		OSV          string
		FixedVersion string `json:"fixed_version"`
		Trace        []frame
	}
}

func (f frame) String() string {
	s := f.Package
	if f.Function != "" {
		if f.Receiver != "" {
			s += ".(" + f.Receiver + ")"
		}
		s += "." + f.Function
	}
	if f.Position != nil && f.Position.Filename != "" {
		s += fmt.Sprintf(" (%s:%d)", f.Position.Filename, f.Position.Line)
	}
	return s
}

const (
	levelModule = iota + 1
	levelPackage
	levelSymbol
)

func report(args []string) error {
	if len(args) != 2 {
		return errors.New("usage: report GOVULNCHECK_JSON GO_LIST_DEPS")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	depsText, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(depsText)) {
		deps[p] = true
	}
	if len(deps) == 0 {
		return fmt.Errorf("%s lists no packages", args[1])
	}

	var (
		config     bool
		entries    = map[string]*entry{}
		stdlibOSVs int
		level      = map[string]int{}
		traces     = map[string][]frame{}
		found      = map[string]frame{}
		fixed      = map[string]string{}
	)
	dec := json.NewDecoder(bufio.NewReader(f))
	for {
		var m message
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("%s: %v", args[0], err)
		}
		switch {
		case m.Config != nil:
			config = true
			c := m.Config
			fmt.Printf("govulncheck %s, %s scan, database %s (modified %s)\n", c.ScannerVersion, c.ScanLevel, c.DB, c.DBLastModified)
			if c.ScanLevel != "symbol" {
				return fmt.Errorf("scan level %q, want symbol", c.ScanLevel)
			}
		case m.OSV != nil:
			entries[m.OSV.ID] = m.OSV
			for _, a := range m.OSV.Affected {
				if a.Package.Name == "stdlib" {
					stdlibOSVs++
					break
				}
			}
		case m.Finding != nil && len(m.Finding.Trace) > 0:
			id, t := m.Finding.OSV, m.Finding.Trace
			l := levelModule
			if t[0].Function != "" {
				l = levelSymbol
			} else if t[0].Package != "" {
				l = levelPackage
			}
			if l > level[id] {
				level[id], found[id] = l, t[0]
			}
			if l == levelSymbol {
				traces[id] = t
			}
			if m.Finding.FixedVersion != "" {
				fixed[id] = m.Finding.FixedVersion
			}
		}
	}
	// An empty or unrelated database answers "no vulnerabilities". A real one
	// always has entries for the standard library we build with.
	if !config {
		return errors.New("govulncheck wrote no configuration: it did not run")
	}
	if stdlibOSVs == 0 {
		return fmt.Errorf("the database returned no entries at all for the standard library (%d entries in total): it is empty or not the Go vulnerability database, so a clean result means nothing", len(entries))
	}
	fmt.Printf("the database returned %d entries for the modules in the build (%d for the standard library)\n", len(entries), stdlibOSVs)

	ids := make([]string, 0, len(level))
	for id := range level {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	called := 0
	for _, id := range ids {
		e, at := entries[id], found[id]
		summary := ""
		if e != nil {
			summary = e.Summary
		}
		fix := fixed[id]
		if fix == "" {
			fix = "none"
		}
		where := fmt.Sprintf("%s@%s, fixed in %s", at.Module, at.Version, fix)
		switch level[id] {
		case levelSymbol:
			called++
			fmt.Printf("CALLED   %s: %s\n         %s; our code calls it:\n", id, summary, where)
			for _, fr := range traces[id] {
				fmt.Printf("           %s\n", fr)
			}
		case levelPackage:
			fmt.Printf("IMPORTED %s: %s\n         %s; package %s is in our build, but none of its vulnerable functions is called\n", id, summary, where, at.Package)
		default:
			fmt.Printf("REQUIRED %s: %s\n         %s; only a module we require; %s\n", id, summary, where, inBuild(e, at.Module, deps))
		}
	}
	if called > 0 {
		return fmt.Errorf("FAIL: our code calls %d vulnerable function(s) (%s)", called, strings.Join(calledIDs(ids, level), ", "))
	}
	fmt.Printf("ok: no vulnerable function is called (%d finding(s) in imported packages or required modules, printed above, do not fail CI)\n", len(ids))
	return nil
}

func calledIDs(ids []string, level map[string]int) []string {
	var out []string
	for _, id := range ids {
		if level[id] == levelSymbol {
			out = append(out, id)
		}
	}
	return out
}

// inBuild says which of the entry's vulnerable packages go list -deps ./...
// puts in our build (govulncheck -show verbose says the same as "Module
// Results"; this names the packages).
func inBuild(e *entry, module string, deps map[string]bool) string {
	if e == nil {
		return "its entry was not returned"
	}
	var pkgs, hit []string
	for _, a := range e.Affected {
		if a.Package.Name != module {
			continue
		}
		for _, imp := range a.EcosystemSpecific.Imports {
			pkgs = append(pkgs, imp.Path)
			if deps[imp.Path] {
				hit = append(hit, imp.Path)
			}
		}
	}
	switch {
	case len(pkgs) == 0:
		return "the entry names no packages"
	case len(hit) > 0:
		return "yet go list -deps ./... lists " + strings.Join(hit, ", ")
	}
	return fmt.Sprintf("none of its packages (%s) is in our build: go list -deps ./... lists none of them", strings.Join(pkgs, ", "))
}

// addEntry adds a fabricated OSV entry to a copy of the database, with the
// index entries govulncheck reads (as ../shared/tools/build-vulndb.py writes
// them): ID/ID.json, index/vulns.json, index/modules.json and index/db.json.
func addEntry(args []string) error {
	if len(args) != 6 {
		return errors.New("usage: addentry DIR ID MODULE FIXED PACKAGE SYMBOL")
	}
	dir, id, modPath, fix, pkg, symbol := args[0], args[1], args[2], strings.TrimPrefix(args[3], "v"), args[4], args[5]
	now := time.Now().UTC().Format(time.RFC3339)
	osv := map[string]any{
		"schema_version": "1.3.1",
		"id":             id,
		"modified":       now,
		"published":      now,
		"summary":        "Fabricated vulnerability in " + pkg + "." + symbol + " (govulncheck_test.sh)",
		"details":        "Not a real vulnerability: the self-test of .ci/govulncheck.sh.",
		"affected": []any{map[string]any{
			"package": map[string]any{"name": modPath, "ecosystem": "Go"},
			"ranges": []any{map[string]any{"type": "SEMVER", "events": []any{
				map[string]any{"introduced": "0"}, map[string]any{"fixed": fix},
			}}},
			"ecosystem_specific": map[string]any{"imports": []any{
				map[string]any{"path": pkg, "symbols": []string{symbol}},
			}},
		}},
		"database_specific": map[string]any{"url": "https://example.invalid/" + id},
	}
	write := func(name string, v any) error {
		p := filepath.Join(dir, name)
		os.Remove(p + ".gz") // the plain file is read first
		os.Remove(p)         // a copy of a read-only file is read-only
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return os.WriteFile(p, b, 0o644)
	}
	var vulns []map[string]any
	if err := readJSON(dir, "index/vulns.json", &vulns); err != nil {
		return err
	}
	vulns = append(vulns, map[string]any{"id": id, "modified": now, "aliases": []string{}})
	type module struct {
		Path  string           `json:"path"`
		Vulns []map[string]any `json:"vulns"`
	}
	var mods []module
	if err := readJSON(dir, "index/modules.json", &mods); err != nil {
		return err
	}
	ref := map[string]any{"id": id, "modified": now, "fixed": fix}
	i := sort.Search(len(mods), func(i int) bool { return mods[i].Path >= modPath })
	if i < len(mods) && mods[i].Path == modPath {
		mods[i].Vulns = append(mods[i].Vulns, ref)
	} else {
		mods = append(mods, module{})
		copy(mods[i+1:], mods[i:])
		mods[i] = module{Path: modPath, Vulns: []map[string]any{ref}}
	}
	for _, w := range []struct {
		name string
		v    any
	}{
		{"ID/" + id + ".json", osv},
		{"index/vulns.json", vulns},
		{"index/modules.json", mods},
		{"index/db.json", map[string]string{"modified": now}},
	} {
		if err := write(w.name, w.v); err != nil {
			return err
		}
	}
	fmt.Printf("added %s: %s.%s in %s before %s\n", id, pkg, symbol, modPath, fix)
	return nil
}
