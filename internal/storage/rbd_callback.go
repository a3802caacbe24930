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

// dlAioDone is librbd's completion callback of a write, discard or flush,
// dlReadDone that of a read (rd holds a lent read's buffers, nil for one
// copied into its Go buffer). Both run on a librbd thread and end the I/O
// that submitIO (rbd_librbd.go) started.
//
//export dlAioDone
func dlAioDone(c C.rbd_completion_t, arg unsafe.Pointer) { complete(c, arg, nil) }

//export dlReadDone
func dlReadDone(c C.rbd_completion_t, arg unsafe.Pointer, rd *C.dl_read) { complete(c, arg, rd) }

// complete releases the completion and the I/O's pin, then runs its done
// function with the result.
func complete(c C.rbd_completion_t, arg unsafe.Pointer, rd *C.dl_read) {
	r := int64(C.rbd_aio_get_return_value(c))
	C.rbd_aio_release(c)
	h := cgo.Handle(uintptr(arg))
	a := h.Value().(*asyncIO)
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
