package metrics

import "golang.org/x/sys/windows"

// diskSpace reads the volume holding dir; avail is what the service's
// user may still write (its quota included). NTFS has no inode count.
func diskSpace(dir string) (fsSpace, error) {
	p, err := windows.UTF16PtrFromString(dir)
	if err != nil {
		return fsSpace{}, err
	}
	var avail, total, free uint64
	if err := windows.GetDiskFreeSpaceEx(p, &avail, &total, &free); err != nil {
		return fsSpace{}, err
	}
	return fsSpace{avail: avail, size: total}, nil
}
