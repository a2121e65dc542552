"""The module tree pane: a sortable QTreeView over ModuleTreeModel, a select/clear bar, and an empty-state hint."""

from __future__ import annotations

from collections import Counter

from PySide6.QtCore import QEvent, QItemSelectionModel, QObject, QSortFilterProxyModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QPushButton,
    QStackedWidget,
    QStyledItemDelegate,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from mono_quant_core.errors import ConfigError
from mono_quant_gui.modules import precision
from mono_quant_gui.modules import tree_model as tm
from mono_quant_gui.window import colors
from mono_quant_gui.window.empty_state import EmptyState
from mono_quant_gui.window.formatting import format_bytes, format_share

ANY_TYPE = "Any type"
SUMMARY_STYLE = "color: palette(placeholder-text);"
#: The widest text each column of numbers or statuses shows in practice: the column is sized to fit it
#: once, without reading any row (the tree may hold thousands).
_WIDEST = {
    tm.COL_PARAMS: ("999.9 M",),
    tm.COL_BYTES: ("999.9 MiB",),
    tm.COL_PRECISION: ("float", "int8", "bf16"),
    tm.COL_ALGORITHM: ("gptq+BC", "rtn+SQ"),
    tm.COL_SQNR: ("99.9 dB",),
    tm.COL_SENSITIVITY: ("99.9 dB",),
    tm.COL_STATUS: ("quantized", "low SQNR", "kept float"),
}
#: Added to a text's width: the cell's margins and a little air.
_PADDING = 10
#: The Name column fits the longest name on screen up to this share of the width that the numbers and
#: statuses leave to Name and Type; Type fits its longest type name in what is left (cut in the middle).
_NAME_MAX_SHARE = 0.7


class MiddleElideDelegate(QStyledItemDelegate):
    """Cuts a long text in the middle: a type name keeps the end that tells it apart
    (``TransformerEn…Layer`` vs ``TransformerEncoder``, ``NonDynamica…Linear``)."""

    def initStyleOption(self, option, index) -> None:
        super().initStyleOption(option, index)
        option.textElideMode = Qt.TextElideMode.ElideMiddle


class SelectionBar(QWidget):
    """Type combo + name pattern + Select / Clear: tick or untick many layers in one action."""

    apply = Signal(bool, object, str)  # checked, type name (None: any), pattern

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.type_combo = QComboBox(objectName="select_type")
        self.type_combo.setToolTip("Only layers of this type")
        self.type_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.type_combo.setMinimumContentsLength(10)
        self.pattern = QLineEdit(objectName="select_pattern", placeholderText="name pattern, e.g. features.*")
        self.pattern.setToolTip(
            "Glob on the qualified module name (re:… for a regular expression); "
            "a match on a container covers everything inside it"
        )
        self.pattern.setClearButtonEnabled(True)
        self.pattern.setMinimumWidth(60)
        self.select_button = QPushButton("Select", objectName="select_button")
        self.select_button.setToolTip("Tick every matching layer")
        self.clear_button = QPushButton("Clear", objectName="clear_button")
        self.clear_button.setToolTip("Untick every matching layer")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.type_combo)
        layout.addWidget(self.pattern, 1)
        layout.addWidget(self.select_button)
        layout.addWidget(self.clear_button)
        self.select_button.clicked.connect(lambda: self._emit(True))
        self.clear_button.clicked.connect(lambda: self._emit(False))
        self.pattern.returnPressed.connect(lambda: self._emit(True))
        self.set_types({})

    def set_types(self, counts: dict[str, int]) -> None:
        """Offer the quantizable layer types of the model, with their counts."""
        self.type_combo.clear()
        self.type_combo.addItem(ANY_TYPE, None)
        for name, n in sorted(counts.items()):
            self.type_combo.addItem(f"{name} ({n})", name)

    def _emit(self, checked: bool) -> None:
        self.apply.emit(checked, self.type_combo.currentData(), self.pattern.text().strip())


class ModulePanel(QStackedWidget):
    """The module hierarchy with checkboxes; ``checks_changed`` when the ticked set changes;
    ``precision_chosen(names, precision)`` from the layers' context menu (None: From Settings)."""

    checks_changed = Signal()
    precision_chosen = Signal(list, object)
    #: The current row changed: its module's name ("" when no row is current).
    layer_selected = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("module_panel")
        self.hint = EmptyState()
        self.addWidget(self.hint)
        page = QWidget()
        self.model = tm.ModuleTreeModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(tm.SORT_ROLE)
        self.proxy.setDynamicSortFilter(False)
        self.view = QTreeView(objectName="module_tree")
        self.view.setModel(self.proxy)
        self.view.setUniformRowHeights(True)
        self.view.setIndentation(16)  # (20 by default) deep trees keep more of the Name column for names
        self.view.setAlternatingRowColors(True)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
        # Several layers take one precision at once; a click still selects one (select_layer, selected_name).
        self.view.setSelectionMode(QTreeView.SelectionMode.ExtendedSelection)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._layer_context_menu)
        header = self.view.header()
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(40)
        # Name takes the room left, at least the width of the names on screen; the others are interactive,
        # sized to fit their widest usual text (Type from the model's type names, see _fit_columns).
        # ResizeToContents would read rows off screen; measuring Name reads only the rows on screen.
        header.setSectionResizeMode(tm.COL_NAME, QHeaderView.ResizeMode.Stretch)
        header.setResizeContentsPrecision(0)
        for col in (tm.COL_TYPE, *_WIDEST):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(col, self._text_width(col, _WIDEST.get(col, ("Sequential",))))
        self.view.setItemDelegateForColumn(tm.COL_TYPE, MiddleElideDelegate(self.view))
        # Sensitivity has values only after an analysis: until then its room is the names'; the same for
        # Algorithm until a run used more than round to nearest.  Params
        # (Size says the same in bytes) starts hidden; the header's context menu shows any column.
        self.view.setColumnHidden(tm.COL_SENSITIVITY, True)
        self.view.setColumnHidden(tm.COL_PARAMS, True)
        self.view.setColumnHidden(tm.COL_ALGORITHM, True)
        self.model.algorithms_changed.connect(lambda shown: self.show_column(tm.COL_ALGORITHM, shown))
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        header.customContextMenuRequested.connect(self._column_menu)
        self.bar = SelectionBar()
        self.bar.apply.connect(self._apply_bar)
        self.summary = QLabel(objectName="tree_summary")
        self.summary.setStyleSheet(SUMMARY_STYLE)
        layout = QVBoxLayout(page)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.bar)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.summary)
        self.addWidget(page)
        self.page = page
        self.model.checks_changed.connect(self._checks_changed)
        self._type_need = self._text_width(tm.COL_TYPE, ("Sequential",))
        self._name_need = 0
        self._fit_grow_only = False
        self._fit_timer = QTimer(self, singleShot=True, interval=0)
        self._fit_timer.timeout.connect(lambda: self._fit_columns(self._fit_grow_only))
        self.view.expanded.connect(lambda _index: self._schedule_fit())
        self.view.collapsed.connect(lambda _index: self._schedule_fit())
        self.view.verticalScrollBar().valueChanged.connect(lambda _value: self._schedule_fit(grow_only=True))
        self.view.viewport().installEventFilter(self)
        self.view.selectionModel().currentChanged.connect(
            lambda current, _previous: self.layer_selected.emit(current.data(tm.NAME_ROLE) or "")
        )

    def _column_menu(self, pos) -> None:
        """Show or hide the columns after Module (the header's context menu)."""
        header = self.view.header()
        menu = QMenu(self)
        for col in range(1, len(tm.COLUMNS)):
            action = menu.addAction(tm.COLUMNS[col])
            action.setCheckable(True)
            action.setChecked(not header.isSectionHidden(col))
            action.toggled.connect(lambda on, c=col: self.show_column(c, on))
        menu.exec(header.mapToGlobal(pos))

    def show_column(self, col: int, shown: bool = True) -> None:
        self.view.setColumnHidden(col, not shown)
        self._schedule_fit()

    def set_sensitivity(self, layers: list) -> None:
        """Show each layer's sensitivity (LayerSensitivity) in its column, shown while there are values."""
        self.model.set_sensitivity(layers)
        self.view.setColumnHidden(tm.COL_SENSITIVITY, not layers)
        self._schedule_fit()

    def show_hint(self, title: str, text: str, actions: list | None = None) -> None:
        self.hint.set_content(title, text, actions or [])
        self.setCurrentWidget(self.hint)

    def set_rows(self, rows: list) -> None:
        """Show a model's ModuleRows; the top two levels are expanded."""
        self.view.setUpdatesEnabled(False)
        try:
            self.model.set_rows(rows)
            self.bar.set_types(dict(Counter(r.type for r in rows if r.quantizable)))
            self._fit_type_column({r.type for r in rows})
            self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)
            self.proxy.sort(-1)
            self.view.expandToDepth(0)
        finally:
            self.view.setUpdatesEnabled(True)
        self.setCurrentWidget(self.page)
        self._schedule_fit()  # again once the page is laid out, with the names then on screen

    def _text_width(self, col: int, texts) -> int:
        """Room for the widest of ``texts`` in column ``col``, and for the column's title."""
        metrics = self.view.fontMetrics()
        title = self.view.header().fontMetrics().horizontalAdvance(tm.COLUMNS[col])
        return max(title, *(metrics.horizontalAdvance(t) for t in texts)) + _PADDING

    def _fit_type_column(self, types: set[str]) -> None:
        """Remember the Type column's need (the longest type name) and fit Name and Type."""
        self._type_need = self._text_width(tm.COL_TYPE, types)
        self._name_need = 0
        self._fit_columns()

    def _fit_columns(self, grow_only: bool = False) -> None:
        """Give Name the width of the longest name on screen (up to _NAME_MAX_SHARE of the room that the
        numbers leave), and Type the longest type name within what is left; Name stretches over the rest.

        Only the rows on screen are measured (the tree may hold thousands).  Scrolling only widens
        Name (``grow_only``), so the columns do not jump while the user scrolls.  The root row's name
        is its type: cut in the Name column, it is read in full under Type.
        """
        header = self.view.header()
        # Before its first showing the page has no size yet: the pane less its margins and frame (~12 px).
        width = self.view.viewport().width() if self.currentWidget() is self.page else self.width() - 12
        room = width - sum(header.sectionSize(col) for col in _WIDEST if not header.isSectionHidden(col))
        need = max(self.view.sizeHintForColumn(tm.COL_NAME), 0) + _PADDING
        self._name_need = max(self._name_need, need) if grow_only else need
        least = min(
            self._type_need, max(self._text_width(tm.COL_TYPE, ("Sequential",)), int(room * (1 - _NAME_MAX_SHARE)))
        )
        header.resizeSection(tm.COL_TYPE, min(self._type_need, max(least, room - self._name_need)))

    def _schedule_fit(self, grow_only: bool = False) -> None:
        self._fit_grow_only = grow_only and (self._fit_grow_only or not self._fit_timer.isActive())
        self._fit_timer.start()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.view.viewport() and event.type() == QEvent.Type.Resize:
            self._schedule_fit()
        return super().eventFilter(watched, event)

    def select_layer(self, name: str) -> bool:
        """Select and reveal the module called ``name``; False when it is not in the tree."""
        source = self.model.row_of(name)
        if not source.isValid():
            return False
        index = self.proxy.mapFromSource(source)
        parent = index.parent()
        while parent.isValid():
            self.view.expand(parent)
            parent = parent.parent()
        self.view.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
        )
        self.view.scrollTo(index, QTreeView.ScrollHint.PositionAtCenter)
        return True

    def set_precisions(self, config) -> None:
        """Fill the Precision column from ``config`` (a QuantConfig): each layer's dtype or float, bold when
        ``layer_overrides`` sets it."""
        precisions, overridden = precision.layer_precisions(config, self.model.quantizable_names())
        self.model.set_precisions(precisions, overridden)

    def reveal(self, names: list[str]) -> None:
        """Expand the tree down to each of ``names`` (the layers an automatic run kept, say)."""
        for name in names:
            index = self.proxy.mapFromSource(self.model.row_of(name)).parent()
            while index.isValid():
                self.view.expand(index)
                index = index.parent()

    def selected_layers(self) -> list[str]:
        """The quantizable layers among the selected rows (a selected container gives its layers), in module order."""
        chosen = {index.data(tm.NAME_ROLE) for index in self.view.selectionModel().selectedRows(0)}
        return [
            name
            for name in self.model.quantizable_names()
            if any(c == "" or name == c or name.startswith(c + ".") for c in chosen)
        ]

    def layer_menu(self, pos) -> QMenu | None:
        """The context menu at ``pos`` (viewport coordinates) for the selected layers, or the row under
        ``pos`` when it is not selected; None off the rows or without a layer."""
        index = self.view.indexAt(pos)
        if not index.isValid():
            return None
        selection = self.view.selectionModel()
        if not selection.isSelected(index):
            selection.setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows
            )
        names = self.selected_layers()
        if not names:
            return None
        current = {self.model.precision(name) or "" for name in names}
        return precision.precision_menu(self, names, current, self.precision_chosen.emit)

    def _layer_context_menu(self, pos) -> None:
        menu = self.layer_menu(pos)
        if menu is not None:
            menu.exec(self.view.viewport().mapToGlobal(pos))
            menu.deleteLater()

    def selected_name(self) -> str | None:
        index = self.view.selectionModel().currentIndex()
        return index.data(tm.NAME_ROLE) if index.isValid() else None

    def _apply_bar(self, checked: bool, type_name: str | None, pattern: str) -> None:
        try:
            hits = self.model.set_checked_where(checked, type_name, pattern)
        except ConfigError as exc:  # a bad "re:" pattern is shown (in the engine's words), not raised
            self._warn(str(exc))
            return
        if not hits:  # said, not silently nothing done; the next change of the ticks replaces it
            kind = f"{type_name} layer" if type_name else "layer"
            self._warn(f"no {kind} matches {pattern!r}" if pattern else f"no {kind} can be quantized")

    def _warn(self, text: str) -> None:
        self.summary.setText(text)
        self.summary.setStyleSheet(f"color: {colors.ERROR};")

    def _checks_changed(self) -> None:
        self.summary.setStyleSheet(SUMMARY_STYLE)
        self.summary.setText(selection_line(self.model.rows, set(self.model.checked_names())))
        self.checks_changed.emit()


def selection_line(rows: list, ticked: set[str]) -> str:
    """``Selected: 3 of 5 layers · 87.5 % of weight bytes (12.0 KiB)``: the ticked layers and the share
    of the model's weight bytes they hold (each parameter once, as the report's coverage counts them)."""
    quantizable = [r for r in rows if r.quantizable]
    total = rows[0].weight_bytes if rows else 0
    nbytes = sum(r.weight_bytes for r in quantizable if r.name in ticked)
    text = f"Selected: {len(ticked)} of {len(quantizable)} layers"
    if total:
        text += f" · {format_share(nbytes / total)} of weight bytes ({format_bytes(nbytes)})"
    return text
