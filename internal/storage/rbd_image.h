// The librbd image handle behind rbdImage (rbd_librbd.go), a C interface
// over librbd's C++ API (rbd_image.cc). Every call returns 0 or more on
// success and a negative errno on failure, as librbd does.

#ifndef DISKLESS_RBD_IMAGE_H
#define DISKLESS_RBD_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <rados/librados.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dl_image dl_image;
typedef struct dl_read dl_read;

// dl_image_open opens name in io (at snapshot snap when not NULL),
// read-only when ro.
int dl_image_open(rados_ioctx_t io, const char *name, const char *snap, int ro, dl_image **img);
// dl_image_close closes and frees img, whatever it returns.
int dl_image_close(dl_image *img);
int dl_image_size(dl_image *img, uint64_t *size);

// The asynchronous calls complete by calling dlAioDone(completion, h) -
// a read dlReadDone(completion, h, rd) - (rbd_callback.go) on a librbd
// thread; when they return an error nothing was submitted and nothing will
// be called.
//
// dl_image_aio_read reads len bytes at off: into dst, copied on librbd's
// thread before it completes (rd NULL), or - dst NULL - into buffers
// librbd lends (rd, until dl_read_free).
int dl_image_aio_read(dl_image *img, uint64_t off, size_t len, char *dst, uintptr_t h);
// dl_image_aio_write copies buf before it returns.
int dl_image_aio_write(dl_image *img, uint64_t off, size_t len, const char *buf, uintptr_t h);
int dl_image_aio_discard(dl_image *img, uint64_t off, uint64_t len, uintptr_t h);
int dl_image_aio_flush(dl_image *img, uintptr_t h);

// dl_read_segments returns how many buffers hold a completed read's bytes
// and puts the first max of them in iov.
int dl_read_segments(dl_read *rd, struct iovec *iov, int max);
// dl_read_copy copies the first len bytes of a completed read to buf.
void dl_read_copy(dl_read *rd, char *buf, size_t len);
void dl_read_free(dl_read *rd);

int dl_image_lock_acquire(dl_image *img);
int dl_image_lock_release(dl_image *img);
// dl_image_lock_owner copies the first exclusive lock owner into buf:
// 1 when there is one, 0 when nobody holds the lock.
int dl_image_lock_owner(dl_image *img, char *buf, size_t len);
int dl_image_lock_break(dl_image *img, const char *owner);
int dl_image_is_lock_owner(dl_image *img, int *owner);
// dl_image_watched: 1 when the client at addr watches the image, else 0.
int dl_image_watched(dl_image *img, const char *addr);

// dl_image_metadata_get copies key's value (NUL-terminated) into buf of
// *len bytes; -ERANGE with *len set to what it needs when it is short.
int dl_image_metadata_get(dl_image *img, const char *key, char *buf, size_t *len);
int dl_image_metadata_set(dl_image *img, const char *key, const char *val);
int dl_image_metadata_remove(dl_image *img, const char *key);

int dl_image_snap_create(dl_image *img, const char *name);
int dl_image_snap_remove(dl_image *img, const char *name);

#ifdef __cplusplus
}
#endif

#endif
