"""cffi API-mode build of the futex wait/wake helper (run by setup.py via ``cffi_modules``)."""

from pathlib import Path

from cffi import FFI

CDEF = """
int64_t commy_futex_wait(uint32_t *word, uint32_t expected, int64_t spin_ns, int64_t timeout_ns);
int64_t commy_futex_wake(uint32_t *word);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "commy_kernel_cffi._futex",
    (Path(__file__).with_name("futex.c")).read_text(),
    extra_compile_args=["-O2"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
