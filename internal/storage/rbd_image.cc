//go:build ceph

// The image handle through librbd's C++ API, for one call the C API lacks:
// aio_read2 into a bufferlist, which takes over the buffers the messenger
// received the data in. The C API's reads copy them into the caller's
// buffer; that copy was a tenth of the server's CPU on 1 MiB reads. The
// other calls are the C API's, one for one.

#include "rbd_image.h"

#include <rados/librados.hpp>
#include <rbd/librbd.hpp>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <list>
#include <new>
#include <string>

extern "C" void dlAioDone(void *completion, void *h);		 // rbd_callback.go
extern "C" void dlReadDone(void *completion, void *h, dl_read *rd); // rbd_callback.go

struct dl_image {
	librados::IoCtx io;
	librbd::Image img;
};

struct dl_read {
	ceph::bufferlist bl;
	char *dst;	// copy the bytes here at completion, or lend them (NULL)
	size_t len;
	uintptr_t h;
};

// read_done completes a read: one into dst is copied and its buffers
// freed on librbd's thread, as the C API does; a lent one hands its
// buffers to Go with the result.
static void read_done(librbd::completion_t c, void *arg) {
	dl_read *rd = static_cast<dl_read *>(arg);
	uintptr_t h = rd->h;
	if (rd->dst != nullptr) {
		size_t n = rd->len < rd->bl.length() ? rd->len : rd->bl.length();
		rd->bl.begin().copy(n, rd->dst);
		delete rd;
		rd = nullptr;
	}
	dlReadDone(c, reinterpret_cast<void *>(h), rd);
}

// guarded runs the body of a C entry point: no C++ exception may cross
// into Go (it would end the process). librbd's calls do not throw;
// allocations may.
template <typename F>
static int guarded(F body) {
	try {
		return body();
	} catch (const std::bad_alloc &) {
		return -ENOMEM;
	} catch (...) {
		return -EIO;
	}
}

// completion is an AioCompletion that calls dlAioDone(itself, h) - the
// C API's rbd_completion_t is the same object, so dlAioDone releases it
// with rbd_aio_release.
static librbd::RBD::AioCompletion *completion(uintptr_t h) {
	return new (std::nothrow) librbd::RBD::AioCompletion(reinterpret_cast<void *>(h), dlAioDone);
}

extern "C" int dl_image_open(rados_ioctx_t io, const char *name, const char *snap, int ro, dl_image **img) {
	return guarded([&]() -> int {
		dl_image *d = new (std::nothrow) dl_image;
		if (d == nullptr) return -ENOMEM;
		librados::IoCtx::from_rados_ioctx_t(io, d->io);
		librbd::RBD rbd;
		int r = ro ? rbd.open_read_only(d->io, d->img, name, snap) : rbd.open(d->io, d->img, name, snap);
		if (r < 0) {
			delete d;
			return r;
		}
		*img = d;
		return 0;
	});
}

extern "C" int dl_image_close(dl_image *d) {
	int r = d->img.close();
	delete d;
	return r;
}

extern "C" int dl_image_size(dl_image *d, uint64_t *size) { return d->img.size(size); }

extern "C" int dl_image_aio_read(dl_image *d, uint64_t off, size_t len, char *dst, uintptr_t h) {
	return guarded([&]() -> int {
		dl_read *out = new (std::nothrow) dl_read;
		if (out == nullptr) return -ENOMEM;
		out->dst = dst;
		out->len = len;
		out->h = h;
		librbd::RBD::AioCompletion *c = new (std::nothrow) librbd::RBD::AioCompletion(out, read_done);
		if (c == nullptr) {
			delete out;
			return -ENOMEM;
		}
		int r = d->img.aio_read2(off, len, out->bl, c, 0);
		if (r < 0) {
			c->release();
			delete out;
			return r;
		}
		// The read may be complete, and out handed on, by now.
		return 0;
	});
}

extern "C" int dl_image_aio_write(dl_image *d, uint64_t off, size_t len, const char *buf, uintptr_t h) {
	return guarded([&]() -> int {
		// A copy, as the C API makes by default (rbd_disable_zero_copy_writes):
		// librbd may hold the data after the write completed. Made before
		// the completion, so a failed allocation leaves nothing behind.
		ceph::bufferlist bl;
		bl.append(buf, len);
		librbd::RBD::AioCompletion *c = completion(h);
		if (c == nullptr) return -ENOMEM;
		int r = d->img.aio_write2(off, len, bl, c, 0);
		if (r < 0) c->release();
		return r;
	});
}

extern "C" int dl_image_aio_discard(dl_image *d, uint64_t off, uint64_t len, uintptr_t h) {
	librbd::RBD::AioCompletion *c = completion(h);
	if (c == nullptr) return -ENOMEM;
	int r = d->img.aio_discard(off, len, c);
	if (r < 0) c->release();
	return r;
}

extern "C" int dl_image_aio_flush(dl_image *d, uintptr_t h) {
	librbd::RBD::AioCompletion *c = completion(h);
	if (c == nullptr) return -ENOMEM;
	int r = d->img.aio_flush(c);
	if (r < 0) c->release();
	return r;
}

// Buffers that follow each other in memory count as one: a sparse read's
// extents are pieces of the one buffer the reply arrived in.
extern "C" int dl_read_segments(dl_read *rd, struct iovec *iov, int max) {
	int n = 0;
	char *end = nullptr;
	for (const auto &p : rd->bl.buffers()) {
		char *b = const_cast<char *>(p.c_str());
		if (n > 0 && b == end) {
			if (n <= max) iov[n - 1].iov_len += p.length();
		} else {
			if (n < max) {
				iov[n].iov_base = b;
				iov[n].iov_len = p.length();
			}
			n++;
		}
		end = b + p.length();
	}
	return n;
}

extern "C" void dl_read_copy(dl_read *rd, char *buf, size_t len) {
	size_t n = len < rd->bl.length() ? len : rd->bl.length();
	rd->bl.begin().copy(n, buf);
}

extern "C" void dl_read_free(dl_read *rd) { delete rd; }

extern "C" int dl_image_lock_acquire(dl_image *d) { return d->img.lock_acquire(RBD_LOCK_MODE_EXCLUSIVE); }

extern "C" int dl_image_lock_release(dl_image *d) { return d->img.lock_release(); }

extern "C" int dl_image_lock_owner(dl_image *d, char *buf, size_t len) {
	return guarded([&]() -> int {
		rbd_lock_mode_t mode;
		std::list<std::string> owners;
		int r = d->img.lock_get_owners(&mode, &owners);
		if (r < 0) return r;
		if (owners.empty()) {
			buf[0] = 0;
			return 0;
		}
		snprintf(buf, len, "%s", owners.front().c_str());
		return 1;
	});
}

extern "C" int dl_image_lock_break(dl_image *d, const char *owner) {
	return guarded([&]() -> int {
		return d->img.lock_break(RBD_LOCK_MODE_EXCLUSIVE, owner);
	});
}

extern "C" int dl_image_is_lock_owner(dl_image *d, int *owner) {
	bool is = false;
	int r = d->img.is_exclusive_lock_owner(&is);
	*owner = is;
	return r;
}

extern "C" int dl_image_watched(dl_image *d, const char *addr) {
	return guarded([&]() -> int {
		std::list<librbd::image_watcher_t> watchers;
		int r = d->img.list_watchers(watchers);
		if (r < 0) return r;
		for (const auto &w : watchers) {
			if (w.addr == addr) return 1;
		}
		return 0;
	});
}

extern "C" int dl_image_metadata_get(dl_image *d, const char *key, char *buf, size_t *len) {
	return guarded([&]() -> int {
		std::string v;
		int r = d->img.metadata_get(key, &v);
		if (r < 0) return r;
		if (v.size() + 1 > *len) {
			*len = v.size() + 1;
			return -ERANGE;
		}
		memcpy(buf, v.c_str(), v.size() + 1);
		*len = v.size() + 1;
		return 0;
	});
}

extern "C" int dl_image_metadata_set(dl_image *d, const char *key, const char *val) {
	return guarded([&]() -> int {
		return d->img.metadata_set(key, val);
	});
}

extern "C" int dl_image_metadata_remove(dl_image *d, const char *key) {
	return guarded([&]() -> int { return d->img.metadata_remove(key); });
}

extern "C" int dl_image_snap_create(dl_image *d, const char *name) {
	return guarded([&]() -> int { return d->img.snap_create(name); });
}

extern "C" int dl_image_snap_remove(dl_image *d, const char *name) {
	return guarded([&]() -> int { return d->img.snap_remove(name); });
}
