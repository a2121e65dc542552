"""The ``mono-quant`` command line: ``quantize``, ``run`` and ``inspect`` (DESIGN.md §5)."""
