//go:build unix

package main

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// checkSpoolOwner refuses to change the spool as another user than its
// owner: an envelope rewritten by root (0600) could no longer be read by
// the relay.
func checkSpoolOwner(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) == os.Geteuid() {
		return nil
	}
	owner := strconv.FormatUint(uint64(st.Uid), 10)
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	return fmt.Errorf("the spool %s belongs to user %s: run this as that user, so that the files it rewrites stay readable by the relay (for example: sudo -u %s oauthrelay queue ...)", dir, owner, owner)
}
