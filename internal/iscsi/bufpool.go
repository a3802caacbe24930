package iscsi

import (
	"math/bits"
	"sync"
)

// Data buffers are pooled by power-of-two size class so that the data path
// (1 MiB reads at queue depth 8, 4 KiB at QD32) does not churn the GC.
const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 24 // 16 MiB
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func sizeClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuf returns a buffer of length n; putBuf gives it back.
func getBuf(n int) []byte {
	c := sizeClass(n)
	if c >= len(bufPools) {
		return make([]byte, n)
	}
	if p, ok := bufPools[c].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<(c+minBufShift))
}

func putBuf(b []byte) {
	if b == nil {
		return
	}
	c := sizeClass(cap(b))
	if c >= len(bufPools) || cap(b) != 1<<(c+minBufShift) {
		return
	}
	b = b[:0]
	bufPools[c].Put(&b)
}
