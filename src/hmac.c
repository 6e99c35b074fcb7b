/* What a challenge-response authentication stands on (the managers' auth key, as Python's
   multiprocessing.connection: the key never crosses the wire), with libc only:
   core.sha256(s), core.hmac_sha256(key, message) (FIPS 180-4, RFC 2104), core.random_bytes(n)
   (getrandom(2)) and core.secret_equal(a, b), a compare whose time does not depend on where
   two strings of one length differ. No state is kept between calls: a forked child draws
   its own bytes from the kernel, never a copy of its parent's. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

#include "core.h"
#include "lauxlib.h"

#define SHA256_BLOCK 64
#define SHA256_SIZE 32
#define RANDOM_MAX 65536

typedef struct {
    uint32_t state[8];
    uint64_t length;                    /* bytes hashed so far */
    unsigned char block[SHA256_BLOCK];  /* the partial block, `length % 64` bytes of it used */
} Sha256;

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static void sha256_compress(uint32_t state[8], const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + sha256_k[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

static void sha256_init(Sha256 *s) {
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->state, initial, sizeof initial);
    s->length = 0;
}

static void sha256_update(Sha256 *s, const void *data, size_t len) {
    const unsigned char *p = data;
    size_t used = (size_t)(s->length % SHA256_BLOCK);
    s->length += len;
    if (used > 0) {
        size_t take = SHA256_BLOCK - used < len ? SHA256_BLOCK - used : len;
        memcpy(s->block + used, p, take);
        p += take;
        len -= take;
        if (used + take < SHA256_BLOCK) return;
        sha256_compress(s->state, s->block);
    }
    for (; len >= SHA256_BLOCK; p += SHA256_BLOCK, len -= SHA256_BLOCK) sha256_compress(s->state, p);
    if (len > 0) memcpy(s->block, p, len);
}

static void sha256_final(Sha256 *s, unsigned char out[SHA256_SIZE]) {
    uint64_t bits = s->length * 8;
    unsigned char pad[SHA256_BLOCK + 8] = {0x80};
    size_t used = (size_t)(s->length % SHA256_BLOCK);
    /* 0x80, zeros up to 56 mod 64, then the length in bits, big-endian */
    size_t padlen = (used < 56 ? 56 - used : 120 - used);
    for (int i = 0; i < 8; i++) pad[padlen + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(s->state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->state[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->state[i];
    }
}

/* A string argument, binary safe; a number is refused (not converted), as a key or a
   message given as a number is a mistake. */
static const char *check_bytes(lua_State *L, int arg, size_t *len) {
    luaL_checktype(L, arg, LUA_TSTRING);
    return lua_tolstring(L, arg, len);
}

/* core.sha256(s) -> the 32-byte digest. */
static int sha256(lua_State *L) {
    size_t len;
    const char *s = check_bytes(L, 1, &len);
    Sha256 ctx;
    unsigned char out[SHA256_SIZE];
    sha256_init(&ctx);
    sha256_update(&ctx, s, len);
    sha256_final(&ctx, out);
    lua_pushlstring(L, (const char *)out, sizeof out);
    return 1;
}

/* core.hmac_sha256(key, message) -> the 32-byte HMAC (RFC 2104; a key over 64 bytes is
   hashed first). */
static int hmac_sha256(lua_State *L) {
    size_t key_len, len;
    const char *key = check_bytes(L, 1, &key_len);
    const char *message = check_bytes(L, 2, &len);
    unsigned char k[SHA256_BLOCK] = {0}, pad[SHA256_BLOCK], inner[SHA256_SIZE], out[SHA256_SIZE];
    Sha256 ctx;
    if (key_len > SHA256_BLOCK) {
        sha256_init(&ctx);
        sha256_update(&ctx, key, key_len);
        sha256_final(&ctx, k);
    } else {
        memcpy(k, key, key_len);
    }
    for (int i = 0; i < SHA256_BLOCK; i++) pad[i] = (unsigned char)(k[i] ^ 0x36);
    sha256_init(&ctx);
    sha256_update(&ctx, pad, sizeof pad);
    sha256_update(&ctx, message, len);
    sha256_final(&ctx, inner);
    for (int i = 0; i < SHA256_BLOCK; i++) pad[i] = (unsigned char)(k[i] ^ 0x5c);
    sha256_init(&ctx);
    sha256_update(&ctx, pad, sizeof pad);
    sha256_update(&ctx, inner, sizeof inner);
    sha256_final(&ctx, out);
    lua_pushlstring(L, (const char *)out, sizeof out);
    return 1;
}

/* core.random_bytes(n) -> n bytes from the kernel's generator (0 <= n <= 65536); raises
   with strerror when getrandom fails. Blocks only before the kernel's pool is first
   seeded, at boot. */
static int random_bytes(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 0 || n > RANDOM_MAX)
        return luaL_argerror(L, 1, lua_pushfstring(L, "count must be from 0 to %d, got %I", RANDOM_MAX, n));
    size_t want = (size_t)n, got = 0;
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, want);
    while (got < want) {   /* getrandom may return fewer bytes than asked (over 256), or EINTR */
        ssize_t r = getrandom(p + got, want - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return luaL_error(L, "random_bytes: %s", strerror(errno));
        }
        got += (size_t)r;
    }
    luaL_pushresultsize(&b, want);
    return 1;
}

/* core.secret_equal(a, b) -> true when the strings are equal. For strings of one length
   every byte is read whatever the first difference, so the time tells nothing of where
   they differ; strings of different lengths are unequal at once (the lengths are not
   secret: an HMAC's is fixed). */
static int secret_equal(lua_State *L) {
    size_t a_len, b_len;
    const unsigned char *a = (const unsigned char *)check_bytes(L, 1, &a_len);
    const unsigned char *b = (const unsigned char *)check_bytes(L, 2, &b_len);
    if (a_len != b_len) {
        lua_pushboolean(L, 0);
        return 1;
    }
    /* volatile: the compiler may not turn the loop into one that stops at a difference */
    volatile unsigned char difference = 0;
    for (size_t i = 0; i < a_len; i++) difference = (unsigned char)(difference | (a[i] ^ b[i]));
    lua_pushboolean(L, difference == 0);
    return 1;
}

void forage_open_hmac(lua_State *L) {
    static const luaL_Reg functions[] = {
        {"sha256", sha256},
        {"hmac_sha256", hmac_sha256},
        {"random_bytes", random_bytes},
        {"secret_equal", secret_equal},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}
