//go:build ceph

package storage

/*
#include <stdint.h>
#include <rbd/librbd.h>
#include "rbd_image.h"
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// dlAioDone is librbd's completion callback of a write, discard or flush
// (rbd_librbd.go's aio): it runs on a librbd thread, so it only passes the
// result on, never blocks (the channel has room for it).
//
//export dlAioDone
func dlAioDone(c C.rbd_completion_t, arg unsafe.Pointer) {
	r := int64(C.rbd_aio_get_return_value(c))
	C.rbd_aio_release(c)
	cgo.Handle(uintptr(arg)).Value().(chan int64) <- r
}

// dlReadDone is the completion callback of a read (rbd_librbd.go's
// readAsync), on a librbd thread: rd holds a lent read's buffers, nil for
// a read copied into its Go buffer.
//
//export dlReadDone
func dlReadDone(c C.rbd_completion_t, arg unsafe.Pointer, rd *C.dl_read) {
	r := int64(C.rbd_aio_get_return_value(c))
	C.rbd_aio_release(c)
	h := cgo.Handle(uintptr(arg))
	a := h.Value().(*asyncRead)
	h.Delete()
	a.pin.Unpin()
	var read *rbdRead
	if rd != nil {
		read = &rbdRead{h: rd}
		if r < 0 {
			read.free()
			read = nil
		}
	}
	a.done(read, r)
}
