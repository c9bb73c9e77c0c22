// Package guid makes and recognises the GUIDs Microsoft Entra uses for its
// ids (tenant, application, object, key ids).
package guid

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
)

// New returns a random version-4 UUID in the lower-case 8-4-4-4-12 form
// Entra shows.
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:])  // crypto/rand.Read never fails (it panics first)
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

var guidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Valid reports whether s is a GUID in the 8-4-4-4-12 hex form, in either
// case and without braces, as the Entra portal's copy buttons give it.
func Valid(s string) bool { return guidRE.MatchString(s) }
