package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

var clkTck = 100.0 // USER_HZ on every Linux we run on

// procStat returns utime+stime and cutime+cstime (seconds) and the parent
// pid of pid.
func procStat(pid int) (self, children float64, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	// The command name may contain spaces: fields start after the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v }
	// f[0] is field 3 (state); utime is field 14 → f[11].
	ppid, _ = strconv.Atoi(f[1])
	return (num(11) + num(12)) / clkTck, (num(13) + num(14)) / clkTck, ppid, nil
}

// statusKB reads a "Key:   123 kB" line of /proc/pid/status or smaps_rollup.
func statusKB(file, key string) int64 {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// children lists the direct children of pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, _, pp, err := procStat(p); err == nil && pp == pid {
			out = append(out, p)
		}
	}
	return out
}

// cpuTotal is the CPU seconds used so far by pid, and with tree by all its
// children too: the live ones' own time plus what the ones that exited
// left in pid's cutime/cstime (Postfix's master reaps its daemons).
func cpuTotal(pid int, tree bool) float64 {
	self, ch, _, err := procStat(pid)
	if err != nil {
		return 0
	}
	if !tree {
		return self
	}
	t := self + ch
	for _, c := range children(pid) {
		s, cc, _, err := procStat(c)
		if err == nil {
			t += s + cc
		}
	}
	return t
}

// memKB is the memory of pid: its VmHWM (peak RSS) alone, or with tree the
// sum of the proportional set sizes (Pss: shared pages divided among the
// processes that share them) of pid and its children right now.
func memKB(pid int, tree bool) int64 {
	if !tree {
		return statusKB(fmt.Sprintf("/proc/%d/status", pid), "VmHWM")
	}
	t := statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss")
	for _, c := range children(pid) {
		t += statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", c), "Pss")
	}
	return t
}

func procFlags(name string, args []string) (*flag.FlagSet, *int, *bool) {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	pid := fs.Int("pid", 0, "process to account")
	tree := fs.Bool("tree", false, "include its children (Postfix's master and daemons); memory is then sampled summed Pss")
	fs.Parse(args)
	return fs, pid, tree
}

// measure runs the command after "--" and reports its wall time and the
// CPU seconds and peak memory of the accounted process meanwhile.
func measure(args []string) error {
	fs, pid, tree := procFlags("measure", args)
	cmdArgs := fs.Args()
	if len(cmdArgs) == 0 {
		return errors.New("measure: no command")
	}
	cpu0 := cpuTotal(*pid, *tree)
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if m := memKB(*pid, *tree); m > peak.Load() {
				peak.Store(m)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	cmd := exec.Command(cmdArgs[0], cmdArgs[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	err := cmd.Run()
	el := time.Since(start)
	close(stop)
	<-sampled
	if m := memKB(*pid, *tree); m > peak.Load() {
		peak.Store(m)
	}
	cpu := cpuTotal(*pid, *tree) - cpu0
	if err != nil {
		return fmt.Errorf("%s: %w", cmdArgs[0], err)
	}
	fmt.Printf("elapsed=%.3f cpu=%.2f peak_kb=%d\n", el.Seconds(), cpu, peak.Load())
	return nil
}

func procNow(args []string) error {
	_, pid, tree := procFlags("proc", args)
	fmt.Printf("cpu=%.2f mem_kb=%d rss_kb=%d\n", cpuTotal(*pid, *tree), memKB(*pid, *tree),
		statusKB(fmt.Sprintf("/proc/%d/status", *pid), "VmRSS"))
	return nil
}
