"""mono_quant_gui: the PySide6 + pyqtgraph application over mono_quant_core."""
