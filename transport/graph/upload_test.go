package graph

import (
	"slices"
	"testing"
)

func TestChunks(t *testing.T) {
	if chunkSize != 3932160 || chunkSize%(320<<10) != 0 || chunkSize > 4<<20 {
		t.Fatalf("chunk size %d", chunkSize)
	}
	for _, tc := range []struct {
		size   int64
		ranges []string
	}{
		{0, nil},
		{1, []string{"bytes 0-0/1"}},
		{chunkSize, []string{"bytes 0-3932159/3932160"}},
		{chunkSize + 1, []string{"bytes 0-3932159/3932161", "bytes 3932160-3932160/3932161"}},
		{10_000_000, []string{"bytes 0-3932159/10000000", "bytes 3932160-7864319/10000000", "bytes 7864320-9999999/10000000"}},
	} {
		var got []string
		var sum int64
		cs := chunks(tc.size)
		for i, c := range cs {
			got = append(got, c.contentRange(tc.size))
			sum += c.len()
			if i < len(cs)-1 && c.len()%(320<<10) != 0 {
				t.Fatalf("size %d: chunk %d is %d bytes, not a multiple of 320 KiB", tc.size, i, c.len())
			}
		}
		if !slices.Equal(got, tc.ranges) || sum != tc.size {
			t.Fatalf("size %d: %q (sum %d), want %q", tc.size, got, sum, tc.ranges)
		}
	}
	// 150 MiB, Graph's largest attachment, is exactly 40 full chunks.
	cs := chunks(MaxAttachment)
	if len(cs) != 40 || cs[39].len() != chunkSize || cs[39].last != MaxAttachment-1 {
		t.Fatalf("%d chunks, last %+v", len(cs), cs[len(cs)-1])
	}
}
