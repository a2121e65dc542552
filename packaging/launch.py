"""PyInstaller entry point of the frozen app: runs mono_quant_gui.__main__.main()."""

from __future__ import annotations

import multiprocessing
import sys

from mono_quant_gui.__main__ import main

if __name__ == "__main__":
    # A frozen executable re-runs itself for multiprocessing children; this returns at once in them.
    multiprocessing.freeze_support()
    sys.exit(main())
