"""``python -m mono_quant_core.cli``: the same as the ``mono-quant`` console script."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
