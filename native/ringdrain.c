/* See ringdrain.h.  The protocol is the kernel's (kernel/bpf/ringbuf.c) and
 * the consumer side mirrors libbpf's ringbuf_process_ring(): acquire loads of
 * the positions and of each header, a release store of the consumer
 * position. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>

#include "ringdrain.h"

static int map_info(int map_fd, struct bpf_map_info *info)
{
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	memset(info, 0, sizeof(*info));
	attr.info.bpf_fd = map_fd;
	attr.info.info_len = sizeof(*info);
	attr.info.info = (uint64_t)(unsigned long)info;
	return syscall(__NR_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr)) < 0 ? -errno : 0;
}

int ut_ring_open(struct ut_ring *ring, int map_fd)
{
	struct bpf_map_info info;
	void *cons, *prod;
	int err;

	memset(ring, 0, sizeof(*ring));
	err = map_info(map_fd, &info);
	if (err)
		return err;
	if (info.type != BPF_MAP_TYPE_RINGBUF || !info.max_entries ||
	    (info.max_entries & (info.max_entries - 1)))
		return -EINVAL;
	ring->page = (size_t)sysconf(_SC_PAGESIZE);
	cons = mmap(NULL, ring->page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	if (cons == MAP_FAILED)
		return -errno;
	/* the data area twice: a record that wraps reads as one piece */
	prod = mmap(NULL, ring->page + 2 * (size_t)info.max_entries, PROT_READ, MAP_SHARED,
		    map_fd, (off_t)ring->page);
	if (prod == MAP_FAILED) {
		err = -errno;
		munmap(cons, ring->page);
		return err;
	}
	ring->map_fd = map_fd;
	ring->size = info.max_entries;
	ring->consumer = cons;
	ring->producer = prod;
	ring->data = (unsigned char *)prod + ring->page;
	return 0;
}

unsigned long ut_ring_pending(const struct ut_ring *ring)
{
	return __atomic_load_n(ring->producer, __ATOMIC_ACQUIRE) -
	       __atomic_load_n(ring->consumer, __ATOMIC_ACQUIRE);
}

static inline size_t framed(uint32_t len)
{
	return (BPF_RINGBUF_HDR_SZ + (size_t)len + 7) & ~(size_t)7;
}

size_t ut_ring_drain(struct ut_ring *ring, unsigned char *out, size_t cap,
                     uint32_t *records)
{
	unsigned long cons = __atomic_load_n(ring->consumer, __ATOMIC_ACQUIRE);
	unsigned long prod = __atomic_load_n(ring->producer, __ATOMIC_ACQUIRE);
	unsigned long start = cons;
	size_t used = 0;
	uint32_t n = 0;

	for (;;) {
		if (cons >= prod) {
			/* records may have been committed while we copied */
			prod = __atomic_load_n(ring->producer, __ATOMIC_ACQUIRE);
			if (cons >= prod)
				break;
		}
		uint32_t *hdr = (uint32_t *)(ring->data + (cons & (ring->size - 1)));
		uint32_t word = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
		if (word & BPF_RINGBUF_BUSY_BIT)
			break;
		uint32_t len = word & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
		size_t step = framed(len);
		if (!(word & BPF_RINGBUF_DISCARD_BIT)) {
			if (used + step > cap)
				break;
			uint32_t frame[2] = {len, 0};
			memcpy(out + used, frame, sizeof(frame));
			memcpy(out + used + BPF_RINGBUF_HDR_SZ, hdr + 2, len);
			memset(out + used + BPF_RINGBUF_HDR_SZ + len, 0,
			       step - BPF_RINGBUF_HDR_SZ - len);
			used += step;
			n++;
		}
		cons += step;
	}
	if (cons != start)
		__atomic_store_n(ring->consumer, cons, __ATOMIC_RELEASE);
	*records = n;
	return used;
}

void ut_ring_close(struct ut_ring *ring)
{
	if (ring->consumer)
		munmap(ring->consumer, ring->page);
	if (ring->producer)
		munmap(ring->producer, ring->page + 2 * (size_t)ring->size);
	memset(ring, 0, sizeof(*ring));
}
