package iotrace

import (
	"cmp"
	"slices"
	"time"
)

// Stats sums up a trace.
type Stats struct {
	Reads, Writes            int
	ReadBytes, WriteBytes    uint64
	DistinctReadBlocks       uint64        // blocks read at least once
	Duration                 time.Duration // first login to the last I/O
	LargestGap, LargestGapAt time.Duration // longest time without an I/O arriving, and where it starts
}

// Stats computes s over every session of t; gaps are between arrivals in
// time order.
func (t *Trace) Stats() Stats {
	var s Stats
	type span struct{ lba, end uint64 }
	var spans []span
	var prev time.Duration
	ios := slices.Clone(t.IOs)
	slices.SortStableFunc(ios, func(a, b IO) int { return cmp.Compare(a.At, b.At) })
	for i, r := range ios {
		b := uint64(r.Blocks) * uint64(t.BlockSize)
		if r.Write {
			s.Writes++
			s.WriteBytes += b
		} else {
			s.Reads++
			s.ReadBytes += b
			spans = append(spans, span{r.LBA, r.LBA + uint64(r.Blocks)})
		}
		if i > 0 && r.At-prev > s.LargestGap {
			s.LargestGap, s.LargestGapAt = r.At-prev, prev
		}
		prev = r.At
		s.Duration = max(s.Duration, r.At)
	}
	slices.SortFunc(spans, func(a, b span) int {
		switch {
		case a.lba < b.lba:
			return -1
		case a.lba > b.lba:
			return 1
		}
		return 0
	})
	var end uint64
	for _, sp := range spans {
		start := max(sp.lba, end)
		if sp.end > start {
			s.DistinctReadBlocks += sp.end - start
		}
		end = max(end, sp.end)
	}
	return s
}
