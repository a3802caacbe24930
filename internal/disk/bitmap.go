package disk

import (
	"math/bits"
	"sync/atomic"
)

// bitmap is the set of clusters a layer owns, one bit per cluster in
// uint64 words (cluster c is bit c%64 of word c/64). Bits are only ever
// set, never cleared, and each word is read and set atomically, so
// lookups need no lock. It is safe for concurrent use.
//
// With dirty tracking, setting a bit also marks its word dirty (one bit
// per word) so a flush records only the words that changed.
type bitmap struct {
	words []atomic.Uint64
	dirty []atomic.Uint64 // nil without dirty tracking
}

func newBitmap(g *geometry, track bool) *bitmap {
	b := &bitmap{words: make([]atomic.Uint64, g.nwords)}
	if track {
		b.dirty = make([]atomic.Uint64, (g.nwords+63)/64)
	}
	return b
}

// has reports whether cluster c is set.
func (b *bitmap) has(c int64) bool {
	return b.words[c>>6].Load()&(1<<(c&63)) != 0
}

// next returns the first cluster in [c, limit) whose bit is not set, when
// set, or is set, when !set; limit when there is none.
func (b *bitmap) next(c, limit int64, set bool) int64 {
	for c < limit {
		w := b.words[c>>6].Load()
		if set {
			w = ^w
		}
		if w >>= uint(c & 63); w != 0 {
			return min(c+int64(bits.TrailingZeros64(w)), limit)
		}
		c = (c | 63) + 1
	}
	return limit
}

// setRange sets the bits of clusters [c0, c1) and marks the words that
// changed dirty. The caller sets a bit only once the cluster's data is
// written, so a reader that sees it finds the data.
func (b *bitmap) setRange(c0, c1 int64) {
	for c0 < c1 {
		wi := c0 >> 6
		end := min(c1, (wi+1)<<6)
		mask := ^uint64(0) >> (64 - uint(end-c0)) << uint(c0&63)
		if old := b.words[wi].Or(mask); old&mask != mask && b.dirty != nil {
			b.dirty[wi>>6].Or(1 << (wi & 63))
		}
		c0 = end
	}
}

// count is the number of clusters set.
func (b *bitmap) count() int64 {
	var n int
	for i := range b.words {
		n += bits.OnesCount64(b.words[i].Load())
	}
	return int64(n)
}

// dirtyWords counts the words marked dirty.
func (b *bitmap) dirtyWords() int {
	var n int
	for i := range b.dirty {
		n += bits.OnesCount64(b.dirty[i].Load())
	}
	return n
}

// forEachSet calls f for each run [c0, c1) of set clusters, in order.
func (b *bitmap) forEachSet(clusters int64, f func(c0, c1 int64)) {
	for c := int64(0); c < clusters; {
		c0 := b.next(c, clusters, false)
		if c0 == clusters {
			return
		}
		c1 := b.next(c0, clusters, true)
		f(c0, c1)
		c = c1
	}
}

// memBytes is the memory the bitmap holds.
func (b *bitmap) memBytes() int64 { return int64(len(b.words)+len(b.dirty)) * 8 }
