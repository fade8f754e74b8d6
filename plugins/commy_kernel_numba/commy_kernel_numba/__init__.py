"""numba diff kernel for commy, as a commy plugin."""
