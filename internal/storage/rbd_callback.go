//go:build ceph

package storage

/*
#include <stdint.h>
#include <rbd/librbd.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// dlAioDone is librbd's completion callback (rbd_librbd.go): it runs on a
// librbd thread, so it only passes the result on, never blocks (the
// channel has room for it).
//
//export dlAioDone
func dlAioDone(c C.rbd_completion_t, arg unsafe.Pointer) {
	r := int64(C.rbd_aio_get_return_value(c))
	C.rbd_aio_release(c)
	cgo.Handle(uintptr(arg)).Value().(chan int64) <- r
}
