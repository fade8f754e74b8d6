"""Redis backplane for commy (docs/scale-out.md)."""
