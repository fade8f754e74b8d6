/* commy diff kernels: exact, coalesced [start, end) ranges of differing bytes.
 *
 * One -O3 build holds every path; AVX code is confined to functions with a target
 * attribute so the rest of the library runs on any x86-64, and each path is entered
 * only after __builtin_cpu_supports() says the CPU can run it (no SIGILL when forced).
 *
 * The scan is two primitives per path: next_diff (first differing byte) and next_same
 * (first equal byte).  Alternating them yields maximal runs directly, so runs crossing
 * block boundaries coalesce by construction and every range is byte-exact.
 */
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define COMMY_X86 1
#else
#define COMMY_X86 0
#endif

#define COMMY_AUTO 0
#define COMMY_U64 1
#define COMMY_AVX2 2
#define COMMY_AVX512 3

#define COMMY_E_VARIANT (-1)
#define COMMY_E_CPU (-2)
#define COMMY_E_ARGS (-3)
#define COMMY_E_LENGTH (-4)
#define COMMY_E_WINDOW (-5)

typedef const unsigned char *bp;

static inline uint64_t ld64(bp p) {
    uint64_t v;
    memcpy(&v, p, 8); /* unaligned-safe; compiles to one mov */
    return v;
}

/* Index of the lowest-addressed byte that is nonzero in x (x != 0). */
static inline int64_t first_nz_byte(uint64_t x) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return __builtin_clzll(x) >> 3;
#else
    return __builtin_ctzll(x) >> 3;
#endif
}

/* Bytes of x that are zero get their high bit set.  Only flags above the lowest zero
 * byte can be false positives, so the lowest flag is exact. */
static inline uint64_t zero_bytes(uint64_t x) {
    return (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL;
}

/* ---------------- portable u64 ---------------- */

static int64_t next_diff_u64(bp a, bp b, int64_t pos, int64_t end) {
    while (pos + 32 <= end) {
        uint64_t x = (ld64(a + pos) ^ ld64(b + pos)) | (ld64(a + pos + 8) ^ ld64(b + pos + 8)) |
                     (ld64(a + pos + 16) ^ ld64(b + pos + 16)) |
                     (ld64(a + pos + 24) ^ ld64(b + pos + 24));
        if (x) break;
        pos += 32;
    }
    while (pos + 8 <= end) {
        uint64_t x = ld64(a + pos) ^ ld64(b + pos);
        if (x) return pos + first_nz_byte(x);
        pos += 8;
    }
    while (pos < end && a[pos] == b[pos]) pos++;
    return pos;
}

static int64_t next_same_u64(bp a, bp b, int64_t pos, int64_t end) {
    while (pos + 8 <= end) {
        uint64_t z = zero_bytes(ld64(a + pos) ^ ld64(b + pos));
        if (z) return pos + first_nz_byte(z);
        pos += 8;
    }
    while (pos < end && a[pos] != b[pos]) pos++;
    return pos;
}

#if COMMY_X86
/* ---------------- AVX2 ---------------- */

__attribute__((target("avx2"))) static int64_t next_diff_avx2(bp a, bp b, int64_t pos,
                                                                int64_t end) {
    while (pos + 128 <= end) {
        __m256i x0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + pos)),
                                      _mm256_loadu_si256((const __m256i *)(b + pos)));
        __m256i x1 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + pos + 32)),
                                      _mm256_loadu_si256((const __m256i *)(b + pos + 32)));
        __m256i x2 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + pos + 64)),
                                      _mm256_loadu_si256((const __m256i *)(b + pos + 64)));
        __m256i x3 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + pos + 96)),
                                      _mm256_loadu_si256((const __m256i *)(b + pos + 96)));
        __m256i acc = _mm256_or_si256(_mm256_or_si256(x0, x1), _mm256_or_si256(x2, x3));
        if (!_mm256_testz_si256(acc, acc)) break;
        pos += 128;
    }
    while (pos + 32 <= end) {
        __m256i eq = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(a + pos)),
                                       _mm256_loadu_si256((const __m256i *)(b + pos)));
        uint32_t ne = ~(uint32_t)_mm256_movemask_epi8(eq);
        if (ne) return pos + __builtin_ctz(ne);
        pos += 32;
    }
    return next_diff_u64(a, b, pos, end);
}

__attribute__((target("avx2"))) static int64_t next_same_avx2(bp a, bp b, int64_t pos,
                                                                int64_t end) {
    while (pos + 32 <= end) {
        __m256i eq = _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(a + pos)),
                                       _mm256_loadu_si256((const __m256i *)(b + pos)));
        uint32_t m = (uint32_t)_mm256_movemask_epi8(eq);
        if (m) return pos + __builtin_ctz(m);
        pos += 32;
    }
    return next_same_u64(a, b, pos, end);
}

/* ---------------- AVX-512 (F + BW) ---------------- */

#define L512(p) _mm512_loadu_si512((const void *)(p))

__attribute__((target("avx512f,avx512bw"))) static int64_t next_diff_avx512(bp a, bp b,
                                                                             int64_t pos,
                                                                             int64_t end) {
    /* xor/or accumulate 512 bytes into two zmm registers, then one test: fewer
     * dependent mask operations than OR-ing eight compare masks. */
    while (pos + 512 <= end) {
        __m512i acc0 = _mm512_xor_si512(L512(a + pos), L512(b + pos));
        __m512i acc1 = _mm512_xor_si512(L512(a + pos + 64), L512(b + pos + 64));
        acc0 = _mm512_or_si512(acc0, _mm512_xor_si512(L512(a + pos + 128), L512(b + pos + 128)));
        acc1 = _mm512_or_si512(acc1, _mm512_xor_si512(L512(a + pos + 192), L512(b + pos + 192)));
        acc0 = _mm512_or_si512(acc0, _mm512_xor_si512(L512(a + pos + 256), L512(b + pos + 256)));
        acc1 = _mm512_or_si512(acc1, _mm512_xor_si512(L512(a + pos + 320), L512(b + pos + 320)));
        acc0 = _mm512_or_si512(acc0, _mm512_xor_si512(L512(a + pos + 384), L512(b + pos + 384)));
        acc1 = _mm512_or_si512(acc1, _mm512_xor_si512(L512(a + pos + 448), L512(b + pos + 448)));
        __m512i acc = _mm512_or_si512(acc0, acc1);
        if (_mm512_test_epi64_mask(acc, acc)) break;
        pos += 512;
    }
    while (pos + 64 <= end) {
        __mmask64 ne = _mm512_cmpneq_epi8_mask(L512(a + pos), L512(b + pos));
        if (ne) return pos + __builtin_ctzll(ne);
        pos += 64;
    }
    if (pos < end) {
        /* masked loads never touch bytes past end, so no overread of the tail */
        __mmask64 k = (1ULL << (end - pos)) - 1; /* end - pos < 64 */
        __mmask64 ne = _mm512_mask_cmpneq_epi8_mask(k, _mm512_maskz_loadu_epi8(k, a + pos),
                                                    _mm512_maskz_loadu_epi8(k, b + pos));
        return ne ? pos + __builtin_ctzll(ne) : end;
    }
    return end;
}

__attribute__((target("avx512f,avx512bw"))) static int64_t next_same_avx512(bp a, bp b,
                                                                             int64_t pos,
                                                                             int64_t end) {
    while (pos + 64 <= end) {
        __mmask64 eq = _mm512_cmpeq_epi8_mask(L512(a + pos), L512(b + pos));
        if (eq) return pos + __builtin_ctzll(eq);
        pos += 64;
    }
    return next_same_u64(a, b, pos, end);
}
#endif

/* ---------------- dispatch ---------------- */

int commy_variant_supported(int variant) {
    switch (variant) {
    case COMMY_U64:
        return 1;
#if COMMY_X86
    case COMMY_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") ? 1 : 0;
    case COMMY_AVX512:
        __builtin_cpu_init();
        return (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) ? 1 : 0;
#endif
    default:
        return 0;
    }
}

int commy_best_variant(void) {
    if (commy_variant_supported(COMMY_AVX512)) return COMMY_AVX512;
    if (commy_variant_supported(COMMY_AVX2)) return COMMY_AVX2;
    return COMMY_U64;
}

typedef int64_t (*scan_fn)(bp, bp, int64_t, int64_t);

/* The CPU check is repeated here (cached per variant) so a caller that bypasses the
 * Python layer still gets an error code instead of an illegal instruction. */
static int pick(int variant, scan_fn *nd, scan_fn *ns) {
    static int checked[4] = {0, 0, 0, 0}; /* 0 unknown, 1 yes, 2 no */
    if (variant == COMMY_AUTO) variant = commy_best_variant();
    if (variant < COMMY_U64 || variant > COMMY_AVX512) return COMMY_E_VARIANT;
    if (!checked[variant]) checked[variant] = commy_variant_supported(variant) ? 1 : 2;
    if (checked[variant] != 1) return COMMY_E_CPU;
    switch (variant) {
#if COMMY_X86
    case COMMY_AVX512:
        *nd = next_diff_avx512;
        *ns = next_same_avx512;
        return 0;
    case COMMY_AVX2:
        *nd = next_diff_avx2;
        *ns = next_same_avx2;
        return 0;
#endif
    default:
        *nd = next_diff_u64;
        *ns = next_same_u64;
        return 0;
    }
}

/* out has 1 + 2*cap slots: out[0] receives the resume position, then up to `cap`
 * (start, end) pairs follow (one array, so the Python side allocates nothing per call).
 * Lengths and window are checked here, not in Python, to keep the per-call cost low.
 * Returns the number of ranges written (>= 0) or a negative error; 0 always means done.  out[0] == end when
 * the window is done; otherwise the output was full and scanning must continue from
 * out[0], the start of a run preceded by an equal byte, so no range is ever split. */
int64_t commy_diff(const char *ca, const char *cb, int64_t len_a, int64_t len_b, int64_t start,
                   int64_t end, int variant, int64_t *out, int64_t cap) {
    scan_fn nd, ns;
    int rc = pick(variant, &nd, &ns);
    if (rc) return rc;
    if (len_a != len_b) return COMMY_E_LENGTH;
    if (start < 0 || end < start || end > len_a) return COMMY_E_WINDOW;
    if (cap < 1) return COMMY_E_ARGS;
    bp a = (bp)ca, b = (bp)cb;
    int64_t *resume = out++;
    int64_t n = 0, pos = start;
    while (pos < end) {
        int64_t s = nd(a, b, pos, end);
        if (s >= end) {
            pos = end;
            break;
        }
        if (n == cap) {
            pos = s;
            break;
        }
        int64_t e = ns(a, b, s + 1, end);
        out[2 * n] = s;
        out[2 * n + 1] = e;
        n++;
        pos = e;
    }
    *resume = pos;
    return n;
}

/* Copy each [s, e) of src into dst; ranges are validated against len first so a bad
 * list changes nothing. */
int64_t commy_copy_ranges(char *dst, const char *src, int64_t len, const int64_t *ranges,
                          int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        int64_t s = ranges[2 * i], e = ranges[2 * i + 1];
        if (s < 0 || e < s || e > len) return COMMY_E_ARGS;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t s = ranges[2 * i], e = ranges[2 * i + 1];
        memcpy(dst + s, src + s, (size_t)(e - s));
    }
    return 0;
}
