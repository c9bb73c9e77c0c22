//go:build linux

package queue

import (
	"path/filepath"
	"testing"
)

// TestMountType reads the filesystem type of a device from mountinfo lines.
func TestMountType(t *testing.T) {
	for _, c := range []struct {
		line, dev, want string
		ok              bool
	}{
		{"26 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard", "254:0", "ext4", true},
		{"26 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard", "254:1", "", false},
		// Optional fields before the separator.
		{"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - xfs /dev/root rw,errors=continue", "98:0", "xfs", true},
		{"24 23 0:22 / /dev/shm rw,relatime - tmpfs tmpfs rw", "0:22", "tmpfs", true},
		{"garbage", "0:22", "", false},
		{"1 2 0:22 / /x rw -", "0:22", "", false},
	} {
		got, ok := mountType(c.line, c.dev)
		if got != c.want || ok != c.ok {
			t.Errorf("mountType(%q, %s) = %q %v, want %q %v", c.line, c.dev, got, ok, c.want, c.ok)
		}
	}
	if fsyncCoversNewEntry(filepath.Join(t.TempDir(), "missing")) {
		t.Error("a directory that does not exist is taken to cover its entries")
	}
}
