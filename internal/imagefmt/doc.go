// Package imagefmt owns the disk image file formats that admins bring to
// diskless and take away from it: it detects a file's format, reads any
// supported format as a flat byte range with its zero regions marked, copies
// that into a sparse raw file (the import), and writes raw or qcow2 files
// (the export).
//
// It knows nothing of hosts, of images in the store or of SCSI: callers
// hand it paths and open files, and decide where the result goes.
//
// Which code reads what:
//
//	raw, block device   directly (pread, SEEK_DATA/SEEK_HOLE, BLKGETSIZE64)
//	qcow2 v2/v3         in pure Go (qcow2.go), deflate-compressed clusters too
//	vmdk vhdx vdi vpc   qemu-img convert -O raw into a temporary sparse file
//	export qcow2        qemu-img convert -f raw -O qcow2
//
// Every image file is untrusted input. Headers are checked against the file
// size before anything is allocated, a malformed file is an error and never
// a panic, and no reader ever opens a path named inside an image: backing
// files, external data files and VMDK extents outside the descriptor's own
// directory are refused.
package imagefmt
