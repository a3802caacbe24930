package disk

import (
	"errors"
	"testing"
)

// A layer an overlay has open for writing is refused by CheckLayer (its
// log may be growing) but checked through the overlay, lower layers too,
// while writes and flushes go on.
func TestOverlayCheckWhileOpen(t *testing.T) {
	base, _ := newBase(t, 1<<20, 1)
	s := newStack(t, 1<<20, 4096)
	o := s.open(t, base, OverlayOptions{})
	defer o.Close()
	buf := make([]byte, 8192)
	o.WriteAt(buf, 0)
	s.push(t, o)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			o.WriteAt(buf, int64(i%100)*8192)
			o.Flush()
		}
	}()
	for range 20 {
		infos, err := o.Check()
		if err != nil || len(infos) != 2 || infos[0].Owned != 2 {
			t.Fatalf("Check: %+v %v", infos, err)
		}
	}
	<-done
	if _, err := CheckLayer(s.top); !errors.Is(err, ErrLayerInUse) {
		t.Errorf("CheckLayer of an open top: %v, want ErrLayerInUse", err)
	}
	o.Close()
	if _, err := o.Check(); err == nil {
		t.Error("Check of a closed overlay succeeded")
	}
	if info, err := CheckLayer(s.top); err != nil || info.Owned == 0 {
		t.Errorf("CheckLayer after close: %+v %v", info, err)
	}
}
