package graph

import "fmt"

// Upload sessions take chunks of at most 4 MiB, each a multiple of
// 320 KiB except the last: 12 × 320 KiB is the largest that fits.
const chunkSize = 12 * 320 << 10

// span is one chunk of an attachment, first and last byte included, as
// Content-Range counts.
type span struct{ first, last int64 }

func (s span) len() int64 { return s.last - s.first + 1 }

// contentRange is the chunk's Content-Range for an attachment of size bytes.
func (s span) contentRange(size int64) string {
	return fmt.Sprintf("bytes %d-%d/%d", s.first, s.last, size)
}

// chunks cuts an attachment of size bytes into upload chunks.
func chunks(size int64) []span {
	var out []span
	for off := int64(0); off < size; off += chunkSize {
		out = append(out, span{off, min(off+chunkSize, size) - 1})
	}
	return out
}
