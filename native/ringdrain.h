/*
 * ringdrain: read a BPF ring buffer map (BPF_MAP_TYPE_RINGBUF) straight
 * from its memory mapping, many records per call, with no callback per
 * record.  bcc's open_ring_buffer() calls back into Python once per record
 * (libbpf's ring_buffer__poll): at 100,000+ moves/s that call alone is a
 * large part of a core.  Here a drain copies every committed record into one
 * caller buffer and the collector decodes them in bulk.  Read verbatim by
 * cffi's cdef.
 *
 * Records are copied framed as the kernel frames them (BPF_RINGBUF_HDR_SZ
 * bytes: a uint32 length, then 4 bytes of zero) followed by the record,
 * padded with zeros to a multiple of 8: records of one size sit at one
 * stride, so a run of them can be unpacked as an array.
 */

struct ut_ring {
	int map_fd;
	uint32_t size;              /* data area: a power of two (max_entries) */
	unsigned long *consumer;    /* consumer position (ours, writable page) */
	unsigned long *producer;    /* producer position (read-only page) */
	unsigned char *data;        /* data area, mapped twice in a row */
	size_t page;
};

/* Map the ring buffer `map_fd`.  0, or a negative errno. */
int ut_ring_open(struct ut_ring *ring, int map_fd);
/* Bytes the producer has reserved beyond what was consumed: nonzero means a
 * drain would find something (or a record still being written). */
unsigned long ut_ring_pending(const struct ut_ring *ring);
/* Copy committed records, framed, into out[0..cap) until the buffer cannot
 * hold the next one, the ring is empty, or a record is still being written
 * (BUSY: left for the next drain, as are those after it).  Discarded records
 * are skipped.  Returns the bytes written to out; *records gets their count.
 * The space read is handed back to the producer before returning. */
size_t ut_ring_drain(struct ut_ring *ring, unsigned char *out, size_t cap,
                     uint32_t *records);
void ut_ring_close(struct ut_ring *ring);
