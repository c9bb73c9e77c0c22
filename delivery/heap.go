package delivery

import "time"

// heapEntry is an item's place in the retry heap. It keeps the due time
// it was pushed with: the item's own due changes when it moves on, and a
// heap ordered by a field that changes under it stops being a heap.
type heapEntry struct {
	it  *item
	seq int
	due time.Time
}

type itemHeap []*heapEntry

func (h itemHeap) Len() int           { return len(h) }
func (h itemHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h itemHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *itemHeap) Push(x any)        { *h = append(*h, x.(*heapEntry)) }
func (h *itemHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
