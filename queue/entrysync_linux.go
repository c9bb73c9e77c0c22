//go:build linux

package queue

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// fsyncCoversNewEntry reports whether, on the filesystem holding dir,
// fsync(2) of a newly created file also makes its directory entry durable,
// so that no fsync of the directory is needed. POSIX does not promise it;
// these filesystems do:
//
//   - ext4 with a journal: the create and the file's data are in journal
//     transactions no later than the one fsync commits, and jbd2 commits
//     in order;
//   - ext4 without a journal: fsync of a file created since it was loaded
//     writes its parent directory too (ext4_sync_parent);
//   - xfs: fsync forces the log up to the file's last change, which is
//     after the create that added the entry.
//
// The type is read from /proc/self/mountinfo by device number: statfs(2)
// gives ext2, ext3 and ext4 the same magic, and the ext2 driver does not
// write the parent. Anything else, or any doubt, answers false.
func fsyncCoversNewEntry(dir string) bool {
	var st unix.Stat_t
	if unix.Stat(dir, &st) != nil {
		return false
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		fstype, ok := mountType(sc.Text(), dev)
		if !ok {
			continue
		}
		// Bind mounts repeat a device; all of its lines name one type.
		if fstype != "ext4" && fstype != "xfs" {
			return false
		}
		found = true
	}
	return found && sc.Err() == nil
}

// mountType returns the filesystem type of a mountinfo line when the line
// is for device dev ("major:minor"). The line is
// "id parent major:minor root mountpoint options [optional...] - type source superoptions".
func mountType(line, dev string) (string, bool) {
	fields := strings.Fields(line)
	if len(fields) < 3 || fields[2] != dev {
		return "", false
	}
	for i, f := range fields {
		if f == "-" && i+1 < len(fields) {
			return fields[i+1], true
		}
	}
	return "", false
}
