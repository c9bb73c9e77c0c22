//go:build !(linux || darwin || freebsd || netbsd || openbsd || windows)

package metrics

import "errors"

// diskSpace is not implemented on this system: the spool filesystem
// gauges are left out of /metrics rather than reported as zero.
func diskSpace(string) (fsSpace, error) {
	return fsSpace{}, errors.ErrUnsupported
}
