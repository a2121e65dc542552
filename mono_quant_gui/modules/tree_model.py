"""ModuleTreeModel: a QAbstractItemModel over the engine's ModuleRows (one row per module, no widget items).

Column 0 holds a checkbox for every module whose subtree contains a layer that
can be quantized: a leaf is checked or not, a container is checked, unchecked
or partially checked from its descendants, and ticking it ticks them all.
The ticked names become ``QuantConfig.layers``.  After a run, each layer shows its SQNR, status
and how it was quantized (``gptq``, ``hqq+BC``, ``rtn+SQ``: see :func:`layer_algorithm`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QFont, QGuiApplication, QPalette

from mono_quant_core.config import ALGORITHM_NAMES, name_matcher
from mono_quant_core.report import format_db
from mono_quant_gui.window.formatting import format_bytes, format_count

COLUMNS = ("Module", "Type", "Params", "Size", "Precision", "Algorithm", "SQNR", "Sensitivity", "Status")
(
    COL_NAME,
    COL_TYPE,
    COL_PARAMS,
    COL_BYTES,
    COL_PRECISION,
    COL_ALGORITHM,
    COL_SQNR,
    COL_SENSITIVITY,
    COL_STATUS,
) = range(len(COLUMNS))
#: Raw value for sorting (numbers sort as numbers).
SORT_ROLE = Qt.ItemDataRole.UserRole + 1
#: The module's qualified name ("" for the whole model).
NAME_ROLE = Qt.ItemDataRole.UserRole + 2

_CHECKED, _PARTIAL, _UNCHECKED, _NONE = 2, 1, 0, -1
#: Above this many changed sibling ranges one layoutChanged replaces the dataChanged signals.
_MAX_SPANS = 64
_QT_STATE = {
    _CHECKED: Qt.CheckState.Checked,
    _PARTIAL: Qt.CheckState.PartiallyChecked,
    _UNCHECKED: Qt.CheckState.Unchecked,
}


def layer_algorithm(layer: Any) -> str:
    """``gptq``, ``hqq`` or ``rtn``, with ``+SQ`` when SmoothQuant smoothed its input and ``+BC`` when
    bias correction changed its bias: how a LayerReport's layer was quantized."""
    text = str(getattr(layer, "algorithm", "rtn") or "rtn")
    if getattr(layer, "smoothquant", None):
        text += "+SQ"
    if getattr(layer, "bias_corrected", False):
        text += "+BC"
    return text


def algorithm_tooltip(layer: Any) -> str:
    """What :func:`layer_algorithm`'s short text means, in words."""
    algorithm = str(getattr(layer, "algorithm", "rtn") or "rtn")
    lines = [f"weights rounded by {ALGORITHM_NAMES.get(algorithm, algorithm)}"]
    if getattr(layer, "smoothquant", None):
        lines.append(f"SmoothQuant: {layer.smoothquant}")
    if getattr(layer, "bias_corrected", False):
        lines.append("bias corrected (its mean output shift subtracted)")
    return "\n".join(lines)


def uses_algorithms(layers: Iterable[Any]) -> bool:
    """Whether any of these LayerReports was quantized other than by plain round to nearest."""
    return any(layer_algorithm(layer) != "rtn" for layer in layers)


class ModuleTreeModel(QAbstractItemModel):
    """The module hierarchy of the loaded model, its check states and, after a run, per-layer results."""

    checks_changed = Signal()
    #: Whether the results shown now include a layer quantized other than by plain round to nearest
    #: (emitted when that changes: the panel shows the Algorithm column then).
    algorithms_changed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._set_rows([])

    # -- building ---------------------------------------------------------------------
    def set_rows(self, rows: list[Any]) -> None:
        """Show ``rows`` (ModuleRows in pre-order, parents first); every quantizable layer starts ticked."""
        self.beginResetModel()
        self._set_rows(rows)
        self.endResetModel()
        self.checks_changed.emit()

    def _set_rows(self, rows: list[Any]) -> None:
        self.rows = list(rows)
        n = len(self.rows)
        self._index = {r.name: i for i, r in enumerate(self.rows)}
        self._parent = [self._index.get(r.parent, -1) if r.parent is not None else -1 for r in self.rows]
        self._children: list[list[int]] = [[] for _ in range(n)]
        self._top: list[int] = []
        self._pos = [0] * n
        for i, p in enumerate(self._parent):
            siblings = self._children[p] if p >= 0 else self._top
            self._pos[i] = len(siblings)
            siblings.append(i)
        self._checked = [bool(r.quantizable) for r in self.rows]
        self._results: dict[str, Any] = {}
        self._algorithms = False
        self._skipped: dict[str, str] = {}
        self._precisions: dict[str, str] = {}
        self._overridden: set[str] = set()
        self._sensitivity: dict[str, Any] = {}
        self._kept: dict[str, dict[str, Any]] = {}
        self._grey = QGuiApplication.palette().color(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)
        self._recount()

    def _recount(self) -> list[int]:
        """Recompute each node's (quantizable, ticked) counts over its subtree; returns the states."""
        n = len(self.rows)
        total = [1 if r.quantizable else 0 for r in self.rows]
        ticked = [1 if (r.quantizable and c) else 0 for r, c in zip(self.rows, self._checked, strict=False)]
        for i in range(n - 1, -1, -1):  # children follow their parent in pre-order
            p = self._parent[i]
            if p >= 0:
                total[p] += total[i]
                ticked[p] += ticked[i]
        self._states = [
            _NONE if t == 0 else _CHECKED if k == t else _UNCHECKED if k == 0 else _PARTIAL
            for t, k in zip(total, ticked, strict=False)
        ]
        return self._states

    # -- checks -------------------------------------------------------------------------
    def checked_names(self) -> list[str]:
        """Qualified names of the ticked layers, in module order."""
        return [r.name for r, c in zip(self.rows, self._checked, strict=False) if r.quantizable and c]

    def quantizable_names(self) -> list[str]:
        return [r.name for r in self.rows if r.quantizable]

    def set_checked_names(self, names: Iterable[str]) -> None:
        """Tick exactly ``names`` (unknown names are ignored)."""
        wanted = set(names)
        self._apply([(i, r.name in wanted) for i, r in enumerate(self.rows) if r.quantizable])

    def set_checked_where(self, checked: bool, type_name: str | None = None, pattern: str = "") -> int:
        """Tick or clear every quantizable layer of ``type_name`` (None: any) matching ``pattern``
        (the engine's rule for include/exclude patterns: glob or ``re:``, a container covers its children).

        Returns how many layers matched; raises ConfigError for a bad regular expression."""
        match = name_matcher(pattern) if pattern else (lambda name: True)
        hits = [
            i
            for i, r in enumerate(self.rows)
            if r.quantizable and (type_name is None or r.type == type_name) and match(r.name)
        ]
        self._apply([(i, checked) for i in hits])
        return len(hits)

    def check_state(self, name: str) -> Qt.CheckState | None:
        state = self._states[self._index[name]]
        return None if state == _NONE else _QT_STATE[state]

    def _subtree(self, i: int) -> list[int]:
        out, stack = [], [i]
        while stack:
            j = stack.pop()
            out.append(j)
            stack.extend(self._children[j])
        return out

    def _apply(self, changes: list[tuple[int, bool]]) -> None:
        changes = [(i, c) for i, c in changes if self._checked[i] != c]
        if not changes:
            return
        before = list(self._states)
        for i, c in changes:
            self._checked[i] = c
        after = self._recount()
        # One dataChanged per parent whose children changed state (a range must share a parent).
        spans: dict[int, list[int]] = {}
        for i, (a, b) in enumerate(zip(before, after, strict=False)):
            if a != b:
                span = spans.setdefault(self._parent[i], [self._pos[i], self._pos[i]])
                span[0] = min(span[0], self._pos[i])
                span[1] = max(span[1], self._pos[i])
        if len(spans) > _MAX_SPANS:
            # Thousands of dataChanged signals cost more (each one calls back into
            # index()/parent() through the proxy and the view) than one relayout.
            self.layoutAboutToBeChanged.emit()
            self.layoutChanged.emit()
        else:
            for p, (lo, hi) in spans.items():
                parent = self._make_index(p, 0) if p >= 0 else QModelIndex()
                self.dataChanged.emit(
                    self.index(lo, 0, parent), self.index(hi, 0, parent), [Qt.ItemDataRole.CheckStateRole]
                )
        self.checks_changed.emit()

    # -- results ------------------------------------------------------------------------
    def set_layer_results(self, layers: Iterable[Any]) -> None:
        """Show SQNR and status of finished layers (LayerReports) as they arrive."""
        names = []
        for layer in layers:
            self._results[layer.name] = layer
            names.append(layer.name)
        self._emit_rows(names)
        self._set_algorithms(self._algorithms or uses_algorithms(self._results[n] for n in names))

    def _set_algorithms(self, shown: bool) -> None:
        if shown != self._algorithms:
            self._algorithms = shown
            self.algorithms_changed.emit(shown)

    def shows_algorithms(self) -> bool:
        """Whether a shown result was quantized other than by plain round to nearest."""
        return self._algorithms

    def set_skipped(self, skipped: Iterable[Any]) -> None:
        """Mark layers the run left in float (SkippedLayers), with the reason as tooltip."""
        names = []
        for s in skipped:
            self._skipped[s.name] = s.reason
            names.append(s.name)
        self._emit_rows(names)

    def set_precisions(self, precisions: dict[str, str], overridden: Iterable[str] = ()) -> None:
        """Each layer's configured precision (``int8``, ``int4``, ``fp16``, ``float`` …); ``overridden``:
        the layers whose precision ``layer_overrides`` sets (shown marked)."""
        names = set(self._precisions) | set(precisions)
        self._precisions, self._overridden = dict(precisions), set(overridden)
        self._emit_rows(sorted(names))

    def precision(self, name: str) -> str | None:
        return self._precisions.get(name)

    def set_sensitivity(self, layers: Iterable[Any]) -> None:
        """Show each layer's sensitivity (LayerSensitivity: output SQNR with it alone quantized, its rank)."""
        names = set(self._sensitivity)
        self._sensitivity = {layer.name: layer for layer in layers}
        self._emit_rows(sorted(names | set(self._sensitivity)))

    def set_kept(self, kept: Iterable[dict[str, Any]]) -> None:
        """Mark the layers an automatic run kept float or widened (``report.kept_for_accuracy`` entries)."""
        names = set(self._kept)
        self._kept = {entry["name"]: entry for entry in kept}
        self._emit_rows(sorted(names | set(self._kept)))

    def clear_results(self) -> None:
        if self._results or self._skipped or self._kept:
            names = list(self._results) + list(self._skipped) + list(self._kept)
            self._results, self._skipped, self._kept = {}, {}, {}
            self._emit_rows(names)
        self._set_algorithms(False)

    def clear_sensitivity(self) -> None:
        self.set_sensitivity([])

    def _emit_rows(self, names: list[str]) -> None:
        """dataChanged for the result columns of ``names`` (one relayout when there are many)."""
        if len(names) > _MAX_SPANS:
            self.layoutAboutToBeChanged.emit()
            self.layoutChanged.emit()
            return
        for name in names:
            i = self._index.get(name)
            if i is not None:
                self.dataChanged.emit(self._make_index(i, COL_PRECISION), self._make_index(i, COL_STATUS))

    # -- QAbstractItemModel -------------------------------------------------------------
    def _make_index(self, i: int, column: int) -> QModelIndex:
        return self.createIndex(self._pos[i], column, i)

    def row_of(self, name: str, column: int = 0) -> QModelIndex:
        """The index of the module called ``name`` (invalid when unknown)."""
        i = self._index.get(name)
        return QModelIndex() if i is None else self._make_index(i, column)

    def index(self, row: int, column: int, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> QModelIndex:
        kids = self._children[parent.internalId()] if parent.isValid() else self._top
        if 0 <= row < len(kids) and 0 <= column < len(COLUMNS):
            return self.createIndex(row, column, kids[row])
        return QModelIndex()

    def parent(self, index: QModelIndex | QPersistentModelIndex = QModelIndex()) -> QModelIndex:  # type: ignore[override]
        if not index.isValid():
            return QModelIndex()
        p = self._parent[index.internalId()]
        return QModelIndex() if p < 0 else self._make_index(p, 0)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        if parent.isValid():
            return len(self._children[parent.internalId()]) if parent.column() == 0 else 0
        return len(self._top)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:
        return len(COLUMNS)

    def hasChildren(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> bool:
        return self.rowCount(parent) > 0

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if (
            orientation == Qt.Orientation.Horizontal
            and role == Qt.ItemDataRole.TextAlignmentRole
            and section in (COL_PARAMS, COL_BYTES, COL_SQNR)
        ):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        flags = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == COL_NAME and self._states[index.internalId()] != _NONE:
            flags |= Qt.ItemFlag.ItemIsUserCheckable
        return flags

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        i, col = index.internalId(), index.column()
        row = self.rows[i]
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(row, col)
        if role == Qt.ItemDataRole.CheckStateRole and col == COL_NAME:
            state = self._states[i]
            return None if state == _NONE else _QT_STATE[state]
        if role == SORT_ROLE:
            return self._sort_value(row, col)
        if role == NAME_ROLE:
            return row.name
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, col)
        if role == Qt.ItemDataRole.ForegroundRole and row.reason:
            return self._grey
        if role == Qt.ItemDataRole.FontRole and col == COL_PRECISION and row.name in self._overridden:
            font = QFont()
            font.setBold(True)  # set for this layer, not by the settings panel
            return font
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_PARAMS, COL_BYTES, COL_SQNR, COL_SENSITIVITY):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def setData(
        self, index: QModelIndex | QPersistentModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole
    ) -> bool:
        if role != Qt.ItemDataRole.CheckStateRole or not index.isValid() or index.column() != COL_NAME:
            return False
        i = index.internalId()
        if self._states[i] == _NONE:
            return False
        checked = Qt.CheckState(value) != Qt.CheckState.Unchecked
        self._apply([(j, checked) for j in self._subtree(i) if self.rows[j].quantizable])
        return True

    # -- cell contents ------------------------------------------------------------------
    def _display(self, row: Any, col: int) -> str:
        if col == COL_NAME:
            return row.name.rpartition(".")[2] if row.name else row.type
        if col == COL_TYPE:
            return row.type
        if col == COL_PARAMS:
            return format_count(row.params)
        if col == COL_BYTES:
            return format_bytes(row.bytes)
        if col == COL_PRECISION:
            return self._precisions.get(row.name, "") if row.quantizable else ""
        if col == COL_SENSITIVITY:
            sens = self._sensitivity.get(row.name)
            return "" if sens is None else format_db(sens.output_sqnr_db)
        layer = self._results.get(row.name)
        if col == COL_SQNR:
            return format_db(layer.weight_sqnr_db) if layer is not None else ""
        if col == COL_ALGORITHM:
            return layer_algorithm(layer) if layer is not None else ""
        kept = self._kept.get(row.name)
        if kept is not None:
            return "kept float" if kept["to"] == "float" else f"widened to {kept['to']}"
        if layer is not None:
            return "low SQNR" if layer.status == "low-sqnr" else "quantized"
        if row.name in self._skipped:
            return "float"
        return ""

    def _sort_value(self, row: Any, col: int) -> Any:
        if col == COL_PARAMS:
            return row.params
        if col == COL_BYTES:
            return row.bytes
        if col == COL_SQNR:
            layer = self._results.get(row.name)
            value = None if layer is None else layer.weight_sqnr_db
            return -math.inf if value is None else value
        if col == COL_SENSITIVITY:
            sens = self._sensitivity.get(row.name)
            return math.inf if sens is None or sens.output_sqnr_db is None else sens.output_sqnr_db
        return self._display(row, col).lower()

    def _tooltip(self, row: Any, col: int) -> str | None:
        if col == COL_STATUS and row.name in self._kept:
            return str(self._kept[row.name]["reason"])
        if col == COL_STATUS and row.name in self._skipped:
            return self._skipped[row.name]
        if col == COL_ALGORITHM and row.name in self._results:
            return algorithm_tooltip(self._results[row.name])
        if col == COL_PRECISION and row.quantizable:
            how = "set for this layer (right-click to change)" if row.name in self._overridden else "from Settings"
            return f"{self._precisions.get(row.name, '')}: {how}"
        if col == COL_SENSITIVITY and row.name in self._sensitivity:
            sens = self._sensitivity[row.name]
            text = f"rank {sens.rank}: output SQNR {format_db(sens.output_sqnr_db)} with only this layer quantized"
            if sens.metric_drop is not None:
                text += f"\nmetric drop {sens.metric_drop:.4g}"
            return text
        if col == COL_PARAMS:
            return f"{row.params:,} parameters"
        if col == COL_BYTES:
            return f"{row.bytes:,} bytes (parameters and buffers)"
        # Type: the whole type name, which its column may show cut in the middle.
        name = row.type if col == COL_TYPE else row.name or "(the whole model)"
        return f"{name}\n{row.reason}" if row.reason else name
