"""cffi diff kernels for commy (AVX-512, AVX2, portable u64) as a commy plugin."""
