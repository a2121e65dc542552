"""Per-layer precision: what the config gives each layer, and the ``layer_overrides`` a choice in the tree writes.

The engine decides both (``QuantConfig.layer_config`` / ``override_for``, and its ConfigError
for a combination it refuses); the tree only shows and asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QWidget

from mono_quant_core.config import DTYPES, FLOAT, QuantConfig
from mono_quant_core.errors import ConfigError

#: What the Precision menu offers; ``FROM_SETTINGS`` removes the layer's own entry.
PRECISIONS = (*DTYPES, FLOAT)
FROM_SETTINGS = "From Settings"


def layer_precisions(config: QuantConfig, names: Iterable[str]) -> tuple[dict[str, str], set[str]]:
    """Each layer's precision under ``config`` (its dtype, or ``float``) and the layers whose dtype
    ``layer_overrides`` sets."""
    precisions: dict[str, str] = {}
    overridden: set[str] = set()
    for name in names:
        try:
            layer = config.layer_config(name)
        except ConfigError:
            precisions[name] = "?"  # the panel's note says why the config is refused
            continue
        precisions[name] = FLOAT if layer is None else layer.dtype
        if "dtype" in config.override_for(name):
            overridden.add(name)
    return precisions, overridden


def with_precision(config: QuantConfig, names: Iterable[str], precision: str | None) -> QuantConfig:
    """``config`` with an exact-name entry ``{"dtype": precision}`` for each of ``names`` (None: their
    entries removed, so the settings decide).  Raises the engine's ConfigError for a refused one."""
    overrides = {pattern: dict(fields) for pattern, fields in config.layer_overrides.items()}
    for name in names:
        if precision is None:
            overrides.pop(name, None)
        else:
            overrides[name] = {**overrides.get(name, {}), "dtype": precision}
    return config.replace(layer_overrides=overrides)


def precision_menu(
    parent: QWidget, names: list[str], current: set[str], choose: Callable[[list[str], str | None], None]
) -> QMenu:
    """The tree's context menu for ``names``: Precision ▸ int8 … float, From Settings.
    ``current``: the precisions the layers have now (one of them is ticked when they agree)."""
    menu = QMenu(parent)
    menu.setObjectName("layer_menu")
    what = names[0] if len(names) == 1 else f"{len(names)} layers"
    sub = menu.addMenu("Precision")
    sub.setObjectName("precision_menu")
    sub.setToolTipsVisible(True)
    for precision in PRECISIONS:
        action = QAction(precision, sub)
        action.setCheckable(True)
        action.setChecked(current == {precision})
        action.setToolTip(f"Keep {what} float" if precision == FLOAT else f"Quantize {what} to {precision}")
        action.triggered.connect(lambda _=False, p=precision: choose(names, p))
        sub.addAction(action)
    sub.addSeparator()
    reset = sub.addAction(FROM_SETTINGS)
    reset.setToolTip(f"Quantize {what} as the Settings pane says")
    reset.triggered.connect(lambda _=False: choose(names, None))
    return menu
