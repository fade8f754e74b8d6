"""cffi API-mode build of the diff kernels (run by setup.py via ``cffi_modules``)."""

from pathlib import Path

from cffi import FFI

CDEF = """
int commy_variant_supported(int variant);
int commy_best_variant(void);
int64_t commy_diff(const char *a, const char *b, int64_t len_a, int64_t len_b, int64_t start,
                   int64_t end, int variant, int64_t *out, int64_t cap);
int64_t commy_copy_ranges(char *dst, const char *src, int64_t len, const int64_t *ranges,
                          int64_t n);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "commy_kernel_cffi._diff",
    (Path(__file__).with_name("diff.c")).read_text(),
    # No -march: AVX paths carry their own target attributes, so the library still
    # loads on CPUs without them.
    extra_compile_args=["-O3"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
