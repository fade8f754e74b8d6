"""Example third-party plugin: a diff kernel named "example".

It is deliberately simple (it narrows down with whole-slice comparisons and delegates
the fine work to the reference), ranked low so it is never picked unless named.
"""

from commy import hookimpl
from commy.kernels import (
    VariantInfo,
    check_same_length,
    copy_ranges,
    reference_ranges,
    resolve_window,
)


class ExampleKernel:
    name = "example"
    variant = "slices"

    def diff(self, current, shadow, start=0, end=None):
        n = check_same_length(current, shadow)
        start, end = resolve_window(n, start, end)
        if memoryview(current).cast("B")[start:end] == memoryview(shadow).cast("B")[start:end]:
            return []
        return reference_ranges(current, shadow, start, end)

    def update_shadow(self, shadow, current, ranges):
        copy_ranges(shadow, current, ranges)


class ExampleProvider:
    name = "example"

    def variants(self):
        return [VariantInfo("slices", True, 1, "example third-party kernel")]

    def create(self, variant=None):
        return ExampleKernel()


@hookimpl
def commy_register_kernels(register):
    register("example", ExampleProvider)
