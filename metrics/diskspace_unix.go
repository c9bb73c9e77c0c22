//go:build linux || darwin || freebsd || netbsd || openbsd

package metrics

import "golang.org/x/sys/unix"

// diskSpace reads the filesystem holding dir; avail is what an
// unprivileged user may still write (root's reserve excluded).
func diskSpace(dir string) (fsSpace, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fsSpace{}, err
	}
	bs := uint64(st.Bsize)
	return fsSpace{avail: uint64(st.Bavail) * bs, size: uint64(st.Blocks) * bs, filesFree: uint64(st.Ffree), files: uint64(st.Files)}, nil
}
