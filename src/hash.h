/* The hash functions of the C core, one home each. */
#ifndef FORAGE_HASH_H
#define FORAGE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 with 128-bit output (Aumasson and Bernstein's reference algorithm; the
   published test vectors pass): out[0] is the first 8 bytes of the digest, out[1] the
   last, each read little-endian. key[0], key[1]: the 16-byte key read the same way. */
void siphash128(const uint64_t key[2], const void *data, size_t len, uint64_t out[2]);

/* FNV-1a 64 with a final mix (murmur3's), so that the low bits depend on every byte:
   for in-memory hash tables, never for anything an attacker chooses. */
uint64_t fnv1a_mixed(const void *data, size_t len);

static inline uint64_t load_le64(const unsigned char *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}

static inline void store_le64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

#endif
