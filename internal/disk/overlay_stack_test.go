package disk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// layeredDisk builds an overlay with three lower layers and a top, each
// written in places, with some clusters unmapped and some written with
// zeros, and returns it with the model of its content.
func layeredDisk(t *testing.T, size int64) (*stack, *File, *Overlay, *model) {
	t.Helper()
	base, content := newBase(t, size, 51)
	s := newStack(t, size, 4096)
	m := newModel(content, 4096)
	o := s.open(t, base, OverlayOptions{})
	t.Cleanup(func() { o.Close() })
	for layer := range 4 {
		for i := range 12 {
			off := int64((layer*12+i)*37) * 4096 % (size - 64<<10)
			p := pattern(20000, uint64(layer<<8|i))
			if _, err := o.WriteAt(p, off); err != nil {
				t.Fatal(err)
			}
			m.write(p, off)
		}
		zoff := int64(layer+1) * 300 << 10
		if err := o.Unmap(zoff, 40<<10); err != nil {
			t.Fatal(err)
		}
		m.zero(zoff, 40<<10)
		if _, err := o.WriteAt(make([]byte, 8192), zoff+100<<10); err != nil { // data that is zeros
			t.Fatal(err)
		}
		m.write(make([]byte, 8192), zoff+100<<10)
		if layer < 3 {
			s.push(t, o)
		}
	}
	return s, base, o, m
}

// TestCopyTo: the copy equals the merged view, is sparse where the view
// is zero, overwrites whatever dst held, reports progress and stops on
// cancellation.
func TestCopyTo(t *testing.T) {
	const size = 8 << 20
	_, _, o, m := layeredDisk(t, size)
	path := filepath.Join(t.TempDir(), "export.img")
	// dst starts full of junk: CopyTo must leave no trace of it.
	if err := os.WriteFile(path, pattern(size, 99), 0o600); err != nil {
		t.Fatal(err)
	}
	dst, err := OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	var last int64
	if err := o.CopyTo(context.Background(), dst, func(done int64) { last = done }); err != nil {
		t.Fatal(err)
	}
	if last != size {
		t.Errorf("last progress %d, want %d", last, size)
	}
	got := make([]byte, size)
	if _, err := dst.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, m.cur); i >= 0 {
		t.Fatalf("copy differs at byte %d", i)
	}
	var nonZero int64
	for c := int64(0); c < size/4096; c++ {
		if !allZero(m.cur[c*4096 : (c+1)*4096]) {
			nonZero++
		}
	}
	// Slack for the file system's own blocks (ext4 extent tree).
	if alloc := allocatedBytes(t, path); alloc > nonZero*4096+64<<10 {
		t.Errorf("copy allocates %d bytes, the disk has %d bytes of non-zero clusters", alloc, nonZero*4096)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := o.CopyTo(ctx, dst, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled CopyTo = %v", err)
	}
	small, _ := newImage(t, 4096, 0, false)
	if err := o.CopyTo(context.Background(), small, nil); err == nil {
		t.Error("CopyTo into a file of another size succeeded")
	}
}

// TestMergeIntoLower merges the bottom layer into the one above it (not
// the top) and the next one into the top, with the view unchanged, the
// headers rewritten and the stack reopening without the merged layers.
func TestMergeIntoLower(t *testing.T) {
	const size = 8 << 20
	s, base, o, m := layeredDisk(t, size)
	for range 2 {
		lower, _ := o.Layers()
		gone := lower[0]
		if err := o.MergeInto(gone); err != nil {
			t.Fatal(err)
		}
		checkAll(t, o, m.cur)
		if err := os.RemoveAll(gone); err != nil {
			t.Fatal(err)
		}
		checkAll(t, o, m.cur) // the merged layer's files may go
		now, _ := o.Layers()
		info, err := CheckLayer(now[0])
		if err != nil || info.Parent != "" {
			t.Fatalf("new bottom layer: %+v, %v; want the base as parent", info, err)
		}
	}
	checkMapped(t, o, m.cur)
	s.lower, s.top = o.Layers()
	if len(s.lower) != 1 {
		t.Fatalf("%d lower layers left, want 1", len(s.lower))
	}
	// And the last one into the top, which has no lower layers after.
	if err := o.MergeInto(s.lower[0]); err != nil {
		t.Fatal(err)
	}
	if st := o.Stats(); st.LowerLayers != 0 || st.OwnerBytes != 0 {
		t.Fatalf("after merging all: %+v", st)
	}
	if info, err := CheckLayer(s.lower[0]); err != nil || info.ID == "" {
		t.Fatalf("merged layer: %+v, %v", info, err)
	}
	checkAll(t, o, m.cur)
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	o, err := OpenOverlay(base, nil, s.top, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	checkAll(t, o, m.cur)
}

// TestMergeIntoShared: a layer another overlay also uses is not merged,
// and the refusal keeps this overlay's shared lock on it.
func TestMergeIntoShared(t *testing.T) {
	const size = 1 << 20
	base, _ := newBase(t, size, 52)
	s := newStack(t, size, 4096)
	o := s.open(t, base, OverlayOptions{})
	defer o.Close()
	if _, err := o.WriteAt(pattern(8192, 1), 0); err != nil {
		t.Fatal(err)
	}
	s.push(t, o)
	// A second host's overlay on the same snapshot.
	other := filepath.Join(t.TempDir(), "other")
	if err := CreateLayer(other, LayerConfig{Size: size, ID: "other", Parent: s.id(s.lower[0]), BaseID: s.cfg.BaseID}); err != nil {
		t.Fatal(err)
	}
	o2, err := OpenOverlay(base, s.lower, other, OverlayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.MergeInto(s.lower[0]); !errors.Is(err, ErrLayerInUse) {
		t.Fatalf("merging a shared layer: %v, want ErrLayerInUse", err)
	}
	o2.Close()
	// Still locked shared by o: nobody may open it for writing.
	if _, err := OpenOverlay(base, nil, s.lower[0], OverlayOptions{}); !errors.Is(err, ErrLayerInUse) {
		t.Fatalf("opening a lower layer in use for writing: %v, want ErrLayerInUse", err)
	}
	if err := o.MergeInto(s.lower[0]); err != nil {
		t.Fatalf("merge once no one else uses it: %v", err)
	}
}
