"""The window's layout at 1280×800 and larger: card texts never move the panes nor clip, module names are
not cut, the queue shows at least five rows; and the module pane answers a pattern that matches nothing."""

from __future__ import annotations

import pytest
from conftest import wait_idle
from PySide6.QtCore import QModelIndex, QPoint, QRect, Qt
from PySide6.QtWidgets import QApplication, QStyle, QStyleOptionViewItem, QTreeView

from mono_quant_core.config import QuantConfig
from mono_quant_core.jobs import Job
from mono_quant_gui.dashboard.dashboard import Card, CardText
from mono_quant_gui.modules import tree_model as tm
from mono_quant_gui.queue.table import MIN_ROWS
from mono_quant_gui.window import colors

RUN_TIMEOUT = 60_000
SIZES = [(1280, 800), (1920, 1080)]
LONG = "a text far longer than any card can show " * 8


def open_at(window, qtbot, size: tuple[int, int], key: str = "transformer"):
    window.resize(*size)
    qtbot.waitExposed(window)
    window.open_demo(key)
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: window.width() == size[0] and window.height() == size[1])


def quantize(window, qtbot) -> None:
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT):
        window.commands.quantize.trigger()
    wait_idle(qtbot, window)


def pane_sizes(window) -> dict[str, tuple[int, int]]:
    panes = {d.objectName(): (d.width(), d.height()) for d in window.docks if d.isVisible()}
    panes["dashboard"] = (window.dashboard.width(), window.dashboard.height())
    return panes


# -- cards ------------------------------------------------------------------------------------------
def fits(label: CardText) -> bool:
    """The label's text is drawn whole: one line as wide as its text, or wrapped within its lines."""
    metrics, width = label.fontMetrics(), label.contentsRect().width()
    if not label.wordWrap():
        return metrics.horizontalAdvance(label.text()) <= width
    needed = metrics.boundingRect(QRect(0, 0, width, 10_000), Qt.TextFlag.TextWordWrap, label.text()).height()
    return needed <= label.contentsRect().height()


@pytest.mark.parametrize("size", SIZES)
def test_no_card_text_is_cut_after_a_run(window, qtbot, size):
    open_at(window, qtbot, size)
    window.settings_panel.combos["mode"].setCurrentText("static")
    quantize(window, qtbot)
    dash = window.dashboard
    assert dash.currentWidget() is dash.page

    def assert_cards_fit() -> list[str]:
        texts = []
        for card in dash.cards():
            for label in (card.title, card.value, card.detail):
                assert label.isVisible()
                assert fits(label), (card.title.text(), label.text(), label.contentsRect())
                assert not label.is_cut() and label.toolTip() == ""
                texts.append(label.text())
        return texts

    texts = assert_cards_fit()
    assert "validation passed" in texts[texts.index("OUTPUT SQNR") + 2]
    # The texts of the other states of a run fit too: starting (static, dynamic), calibrating, stopped.
    names, nbytes = [layer.name for layer in window.session.result.report.layers], 75_000
    for static in (True, False):
        dash.begin_run(names, nbytes, static=static, warn_db=20.0)
        assert_cards_fit()
    dash.begin_run(names, nbytes, static=True, warn_db=20.0)
    dash.set_calibration(3, 32)
    dash.add_layers(window.session.result.report.layers[:2])
    assert_cards_fit()
    dash.stopped("cancelled")
    assert_cards_fit()
    # The cards share the width evenly, in one row or in rows of two.
    widths = {card.width() for card in dash.cards()}
    assert len(widths) == 1 and widths.pop() >= max(card.minimumWidth() for card in dash.cards())


def test_long_card_texts_do_not_move_the_panes_and_are_cut_visibly(window, qtbot):
    open_at(window, qtbot, SIZES[0])
    quantize(window, qtbot)
    dash = window.dashboard
    before, splitter = pane_sizes(window), dash.splitter.sizes()
    heights = [card.height() for card in dash.cards()]
    for card in dash.cards():
        card.set("8" * 60 + " dB", LONG, colors.ERROR)
    qtbot.waitUntil(lambda: all(card.value.is_cut() for card in dash.cards()))
    for _ in range(3):  # layouts are redone on posted events, a level at a time
        QApplication.sendPostedEvents()
        QApplication.processEvents()
    assert pane_sizes(window) == before
    assert dash.splitter.sizes() == splitter
    assert [card.height() for card in dash.cards()] == heights
    for card in dash.cards():
        shown = card.detail.shown_lines()
        assert len(shown) == Card.DETAIL_LINES and shown[-1].endswith("…")
        assert card.detail.toolTip() == LONG and card.value.toolTip() == card.value.text()
        metrics = card.detail.fontMetrics()
        assert all(metrics.horizontalAdvance(line) <= card.detail.contentsRect().width() for line in shown)
    # A short text again: nothing cut, no tooltip, still the same panes.
    dash.size_card.set("1.00 MiB", "from 4.00 MiB · 4.00× smaller")
    assert not dash.size_card.detail.is_cut() and dash.size_card.detail.toolTip() == ""
    assert pane_sizes(window) == before


def test_the_card_grid_puts_the_cards_in_one_row_when_there_is_room(qtbot):
    from mono_quant_gui.dashboard.dashboard import Dashboard

    dash = Dashboard()
    qtbot.addWidget(dash)
    dash.setCurrentWidget(dash.page)
    grid, least = dash.card_grid, max(card.minimumWidth() for card in dash.cards())
    spacing, n = grid.spacing(), len(dash.cards())
    half = (n + 1) // 2
    assert grid.columns(n * least + (n - 1) * spacing) == n
    assert grid.columns(n * least + (n - 1) * spacing - 1) == half
    assert grid.columns(2 * least + spacing - 1) == half  # never one column: the plots keep their height
    row = max(card.sizeHint().height() for card in dash.cards())  # the calibration card has its bar
    assert grid.heightForWidth(n * least + (n - 1) * spacing) == row
    assert grid.heightForWidth(half * least + (half - 1) * spacing) == 2 * row + spacing


# -- module names -----------------------------------------------------------------------------------
def on_screen(view: QTreeView) -> list[QModelIndex]:
    height, shown = view.viewport().height(), []
    index = view.indexAt(QPoint(1, 1))
    while index.isValid() and view.visualRect(index).top() < height:
        shown.append(index)
        index = view.indexBelow(index)
    return shown


def depth(index: QModelIndex) -> int:
    n, parent = 0, index.parent()
    while parent.isValid():
        n, parent = n + 1, parent.parent()
    return n


def name_is_cut(view: QTreeView, index: QModelIndex) -> bool:
    """As the style draws the cell: the text is elided when it is wider than the text rectangle less margins."""
    option = QStyleOptionViewItem()
    view.initViewItemOption(option)
    option.rect = view.visualRect(index)
    view.itemDelegateForIndex(index).initStyleOption(option, index)
    style = view.style()
    text = style.subElementRect(QStyle.SubElement.SE_ItemViewItemText, option, view)
    margin = style.pixelMetric(QStyle.PixelMetric.PM_FocusFrameHMargin, None, view) + 1
    return view.fontMetrics().horizontalAdvance(option.text) > text.width() - 2 * margin


def assert_names_fit(view: QTreeView) -> list[str]:
    check = view.style().pixelMetric(QStyle.PixelMetric.PM_IndicatorWidth, None, view)
    names = []
    for index in on_screen(view):
        text = index.data()
        indent = view.indentation() * (depth(index) + 1)  # the root is decorated
        assert view.columnWidth(tm.COL_NAME) >= view.fontMetrics().horizontalAdvance(text) + indent + check, text
        assert not name_is_cut(view, index), text
        names.append(text)
    return names


@pytest.mark.parametrize("size", SIZES)
def test_module_names_on_screen_are_not_cut(window, qtbot, size):
    open_at(window, qtbot, size)
    view = window.modules.view
    qtbot.waitUntil(lambda: not name_is_cut(view, view.model().index(0, 0)))
    names = assert_names_fit(view)
    assert names[:2] == ["TinyTransformer", "embed"]
    # Expanded to the deepest layer, the names on screen still fit (the Type column gives way).
    source = window.modules.model
    deepest = max((r.name for r in source.rows), key=lambda n: n.count("."))
    assert window.modules.select_layer(deepest)
    leaf = view.currentIndex()
    qtbot.waitUntil(lambda: not name_is_cut(view, leaf))
    names = assert_names_fit(view)
    assert deepest.rsplit(".", 1)[-1] in names and depth(leaf) == deepest.count(".") + 1
    # A type cut in the middle is whole in its tooltip.
    out_proj = view.model().index(0, tm.COL_TYPE, leaf.parent())
    assert out_proj.data(Qt.ItemDataRole.ToolTipRole).splitlines()[0] == "NonDynamicallyQuantizableLinear"
    # All six columns stay in view.
    assert sum(view.columnWidth(c) for c in range(len(tm.COLUMNS))) <= view.viewport().width()


# -- the queue --------------------------------------------------------------------------------------
def test_the_queue_shows_at_least_five_rows(window, qtbot, tmp_path):
    open_at(window, qtbot, SIZES[0], key="cnn")
    jobs = [
        Job(
            script=str(tmp_path / "model.py"),
            checkpoint=str(tmp_path / f"c{i}.pt"),
            output=str(tmp_path / f"c{i}.int8.safetensors"),
            config=QuantConfig(),
        )
        for i in range(8)
    ]
    window.queue_panel.add_jobs(jobs)
    window.queue_dock.raise_()
    table = window.queue_panel.table
    qtbot.waitUntil(lambda: table.isVisible() and table.viewport().height() > 0)
    row = table.rowHeight(0)
    assert table.minimumHeight() == table.height_for_rows(MIN_ROWS)
    assert table.viewport().height() >= MIN_ROWS * row
    assert table.rowAt(MIN_ROWS * row - 1) == MIN_ROWS - 1  # five whole rows from the top
    assert row >= table.fontMetrics().height() + 4


# -- select by pattern ------------------------------------------------------------------------------
def test_a_pattern_that_matches_nothing_says_so(window, qtbot):
    open_at(window, qtbot, SIZES[0])
    panel = window.modules
    ticked = panel.model.checked_names()
    panel.bar.pattern.setText("nothing.here*")
    qtbot.mouseClick(panel.bar.select_button, Qt.MouseButton.LeftButton)
    assert panel.summary.text() == "no layer matches 'nothing.here*'"
    assert colors.ERROR in panel.summary.styleSheet()
    assert panel.model.checked_names() == ticked
    panel.bar.type_combo.setCurrentIndex(panel.bar.type_combo.findData("Linear"))
    panel.bar.pattern.setText("embed")
    qtbot.mouseClick(panel.bar.clear_button, Qt.MouseButton.LeftButton)
    assert panel.summary.text() == "no Linear layer matches 'embed'"
    # A pattern that matches: the summary counts the ticks again, in its usual colour.
    panel.bar.type_combo.setCurrentIndex(0)
    with qtbot.waitSignal(panel.checks_changed):
        qtbot.mouseClick(panel.bar.clear_button, Qt.MouseButton.LeftButton)
    assert panel.summary.text().startswith(f"Selected: {len(ticked) - 1} of {len(ticked)} layers · ")
    assert colors.ERROR not in panel.summary.styleSheet()
