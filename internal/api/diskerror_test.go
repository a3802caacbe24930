package api

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/diskless-boot/diskless/internal/disk"
	"github.com/diskless-boot/diskless/internal/storage"
)

// sickBackend is the Local backend with a host disk whose flush failed
// and whose storage fails until fixed.
type sickBackend struct {
	*storage.Local
	mu     sync.Mutex
	failed map[string]error
	fixed  bool
}

func (b *sickBackend) DiskError(host string, _ storage.DiskState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failed[host]
}

func (b *sickBackend) ClearDiskError(host string, _ storage.DiskState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failed[host] == nil {
		return nil
	}
	if !b.fixed {
		return errors.New("storage: disk of " + host + ": still fails: fdatasync: input/output error")
	}
	delete(b.failed, host)
	return nil
}

// A host whose disk failed a flush shows it (disk_error) in GET /hosts and
// GET /hosts/{host}; POST /hosts/{host}/clear-error answers 409 while the
// storage still fails and clears it once it works; on a healthy disk it
// says there was nothing to clear.
func TestHostDiskError(t *testing.T) {
	sick := &sickBackend{failed: map[string]error{}}
	a := newTestAPIOn(t, func(l *storage.Local) storage.Backend { sick.Local = l; return sick })
	if code, e := a.call(t, "POST", "/images", `{"name": "deb", "size": "1M"}`, nil); code != 201 {
		t.Fatalf("image: %d %+v", code, e)
	}
	for _, h := range []string{"pc1", "pc2"} {
		if code, e := a.call(t, "POST", "/hosts", fmt.Sprintf(`{"name": %q, "image": "deb"}`, h), nil); code != 201 {
			t.Fatalf("host %s: %d %+v", h, code, e)
		}
	}
	sick.failed["pc1"] = fmt.Errorf("%w: disk: fdatasync /x: input/output error", disk.ErrDeviceFailed)

	var list []HostView
	a.call(t, "GET", "/hosts", "", &list)
	if len(list) != 2 || !strings.Contains(list[0].DiskError, "input/output error") || list[1].DiskError != "" {
		t.Fatalf("GET /hosts: disk errors %q, %q; want pc1's only", list[0].DiskError, list[1].DiskError)
	}
	code, e := a.call(t, "POST", "/hosts/pc1/clear-error", "", nil)
	if code != 409 || !strings.Contains(e.Error, "still fails") {
		t.Fatalf("clear-error while the storage fails: %d %+v, want 409", code, e)
	}
	var v HostView
	if a.call(t, "GET", "/hosts/pc1", "", &v); v.DiskError == "" {
		t.Fatal("a clear-error that failed cleared the disk error")
	}
	sick.fixed = true
	var n Notes
	if code, e := a.call(t, "POST", "/hosts/pc1/clear-error", "", &n); code != 200 || len(n.Notes) != 1 ||
		!strings.Contains(n.Notes[0], "may be lost") {
		t.Fatalf("clear-error: %d %+v %v", code, e, n)
	}
	v = HostView{}
	if a.call(t, "GET", "/hosts/pc1", "", &v); v.DiskError != "" {
		t.Fatalf("disk_error after clear-error: %q", v.DiskError)
	}
	if code, _ := a.call(t, "POST", "/hosts/pc2/clear-error", "", &n); code != 200 || !strings.Contains(n.Notes[0], "no error") {
		t.Fatalf("clear-error of a healthy disk: %d %v", code, n)
	}
	if code, _ := a.call(t, "POST", "/hosts/nope/clear-error", "", nil); code != 404 {
		t.Fatalf("clear-error of an unknown host: %d, want 404", code)
	}
}
