"""The ``mono-quant`` command line: ``quantize``, ``sensitivity``, ``run`` and ``inspect`` (DESIGN.md §5)."""
