"""The dashboard: headline figures (coverage and algorithm among them), per-layer SQNR bars, sizes
and calibration progress.

Before the first run it shows a hint instead of empty axes.  Layer results
arrive in batches (the window coalesces ``layer_done`` bursts), and each
batch costs one redraw.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QPainter, QPaintEvent, QResizeEvent, QTextLayout, QTextOption
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QLabel,
    QLayout,
    QLayoutItem,
    QProgressBar,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from mono_quant_core.config import ALGORITHM_NAMES
from mono_quant_core.report import format_db
from mono_quant_gui.dashboard.metric_card import (
    NO_METRIC,
    NO_METRIC_TIP,
    NO_METRIC_VALUE,
    metric_figures,
    metric_tooltip,
    sqnr_target,
)
from mono_quant_gui.dashboard.size_plot import SizePlot
from mono_quant_gui.dashboard.sqnr_plot import SqnrPlot
from mono_quant_gui.runs import run_text
from mono_quant_gui.window import colors
from mono_quant_gui.window.empty_state import EmptyState
from mono_quant_gui.window.formatting import format_bytes, format_share


def output_verdict(report: Any) -> tuple[str, str | None]:
    """The output card's detail and colour: the checks' verdict, a warning when the output SQNR
    passed but sits under the warning line the layer chart draws, and the files it was measured on."""
    warn_db = (report.config or {}).get("warn_layer_sqnr_db")
    sqnr = report.output_sqnr_db
    if not report.passed:
        detail, color = "; ".join(report.failures) or "checks failed", colors.ERROR
    elif warn_db is not None and sqnr is not None and sqnr < warn_db:
        detail, color = f"passed, but under the {warn_db:g} dB warning line", colors.WARNING
    else:
        detail, color = "validation passed", None
    if report.validation_samples:
        n = report.validation_samples
        detail += f" · {n} held-out file{'s' if n != 1 else ''}"
    return detail, color


def coverage_figures(report: Any) -> tuple[str, str]:
    """The Coverage card's value and detail: ``98.3 %``, ``of weights, by GPTQ + SmoothQuant`` (the
    share of the float model's weight bytes the quantized layers hold, and how they were rounded; the
    options are in the tooltip: a card this narrow would cut them in the middle)."""
    share = (report.coverage or {}).get("share")
    value = "—" if share is None else format_share(share)
    settings = report.algorithm or {}
    name = str(settings.get("algorithm", "rtn"))
    text = ALGORITHM_NAMES.get(name, name)
    if settings.get("smoothquant_alpha") is not None:
        text += " + SmoothQuant"
    if settings.get("bias_correction"):
        text += " + bias correction"
    return value, f"of weights, by {text}"


def coverage_tooltip(report: Any) -> str:
    """The Coverage card's tooltip: the algorithm with its options, the coverage and what stayed float, why."""
    lines = [f"Algorithm: {run_text.algorithm_text(report)}"]
    coverage = run_text.coverage_text(report)
    if coverage is not None:
        lines += [f"Coverage: {coverage}", run_text.coverage_details(report)]
    return "\n".join(lines)


class CardText(QLabel):
    """A card's text, ``lines`` lines tall whatever it says: its size never follows its text, so a new
    figure never moves the panes.  Wrapped (when ``wrap``) and cut with "…" where it would not fit;
    then the whole text is the tooltip."""

    def __init__(self, text: str, style: str, lines: int = 1, wrap: bool = False, parent: QWidget | None = None):
        super().__init__(text, parent)
        self.lines = lines
        self.setWordWrap(wrap)
        self.setStyleSheet(style)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    def hasHeightForWidth(self) -> bool:
        return False  # one height for every text (QLabel's own would grow with a wrapped text)

    def sizeHint(self) -> QSize:
        self.ensurePolished()  # the style sheet sets the font
        margins = self.contentsMargins()
        return QSize(0, self.lines * self.fontMetrics().lineSpacing() + margins.top() + margins.bottom())

    def minimumSizeHint(self) -> QSize:
        return self.sizeHint()

    def shown_lines(self) -> list[str]:
        """The lines drawn: the text wrapped at the label's width, the last one cut with "…" if more follows."""
        return self._fit()[0]

    def is_cut(self) -> bool:
        """True when some of the text is not drawn (it is the tooltip then)."""
        return self._fit()[1]

    def _fit(self) -> tuple[list[str], bool]:
        text, width, metrics = self.text(), self.contentsRect().width(), self.fontMetrics()
        if not self.wordWrap():
            shown = metrics.elidedText(text, Qt.TextElideMode.ElideRight, width)
            return [shown], shown != text
        layout = QTextLayout(text, self.font())
        option = QTextOption()
        option.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)  # a long path is broken, not lost
        layout.setTextOption(option)
        layout.beginLayout()
        starts: list[int] = []
        while (line := layout.createLine()).isValid():
            line.setLineWidth(width)
            starts.append(line.textStart())
        layout.endLayout()
        ends = [*starts[1:], len(text)]
        shown = [text[a:b].strip() for a, b in zip(starts, ends, strict=True)][: self.lines]
        cut = len(starts) > self.lines
        if cut:  # the last line shown takes the rest, cut
            shown[-1] = metrics.elidedText(text[starts[self.lines - 1] :].strip(), Qt.TextElideMode.ElideRight, width)
        return shown, cut

    def setText(self, text: str) -> None:
        super().setText(text)
        self._update_tooltip()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._update_tooltip()

    def _update_tooltip(self) -> None:
        self.setToolTip(self.text() if self.is_cut() else "")

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        painter.setFont(self.font())
        rect, height = self.contentsRect(), self.fontMetrics().lineSpacing()
        for i, line in enumerate(self.shown_lines()):
            box = QRect(rect.left(), rect.top() + i * height, rect.width(), height)
            painter.drawText(box, int(self.alignment() & Qt.AlignmentFlag.AlignHorizontal_Mask), line)
        painter.end()


class Card(QFrame):
    """A titled figure: a small caption, a large value and a two-line detail, in a size fixed by the fonts."""

    TITLE_STYLE = "color: palette(placeholder-text); font-size: 8pt; letter-spacing: 1px;"
    VALUE_STYLE = "font-size: 14pt; font-weight: 600;"
    DETAIL_STYLE = "color: palette(placeholder-text);"
    #: The widest values a card shows in practice (sizes, layer and sample counts): a card is never narrower.
    WIDEST_VALUES = ("888.8 MiB", "888 / 888")
    DETAIL_LINES = 2

    def __init__(self, title: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("card")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = CardText(title.upper(), self.TITLE_STYLE)
        self.value = CardText("—", self.VALUE_STYLE)
        self.detail = CardText("", self.DETAIL_STYLE, lines=self.DETAIL_LINES, wrap=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 6, 4, 6)  # narrow: six cards share rows of three at 1280×800
        layout.setSpacing(1)
        for w in (self.title, self.value, self.detail):
            layout.addWidget(w)
        layout.addStretch(1)
        self.extra = layout
        self.value.ensurePolished()
        widest = max(self.value.fontMetrics().horizontalAdvance(t) for t in self.WIDEST_VALUES)
        margins = layout.contentsMargins()
        self.setMinimumWidth(widest + margins.left() + margins.right() + 2 * self.frameWidth())

    def set(self, value: str, detail: str = "", color: str | None = None) -> None:
        self.value.setText(value)
        self.value.setStyleSheet(self.VALUE_STYLE + (f" color: {color};" if color else ""))
        self.detail.setText(detail)

    def add_extra(self, widget: QWidget) -> None:
        """A widget under the detail (the calibration bar); hidden, it keeps its room."""
        policy = widget.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        widget.setSizePolicy(policy)
        self.extra.insertWidget(self.extra.count() - 1, widget)


class CardGrid(QLayout):
    """The cards in one row when each gets its minimum width there, else in rows of two.

    Its height follows its width only (``heightForWidth``), never the cards' texts.
    """

    def __init__(self, spacing: int = 8, parent: QWidget | None = None):
        super().__init__(parent)
        self.setContentsMargins(0, 0, 0, 0)
        self.setSpacing(spacing)
        self._items: list[QLayoutItem] = []

    def addItem(self, item: QLayoutItem) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:
        return Qt.Orientation.Horizontal

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._arrange(QRect(0, 0, width, 0), apply=False)

    def columns(self, width: int) -> int:
        """How many cards share a row at ``width``: all when each gets its minimum width, else half
        (rounded up).  Never one column: four cards stacked would leave the plots no height; below
        two minimum widths a card's text is cut with "…" (its tooltip has it)."""
        n = len(self._items)
        widest = max((item.minimumSize().width() for item in self._items), default=0)
        return n if n and (width - (n - 1) * self.spacing()) // n >= widest else max((n + 1) // 2, 1)

    def _row_height(self) -> int:
        return max((item.sizeHint().height() for item in self._items), default=0)

    def sizeHint(self) -> QSize:
        width = sum(item.minimumSize().width() for item in self._items) + self.spacing() * max(self.count() - 1, 0)
        return QSize(width, self._row_height())

    def minimumSize(self) -> QSize:
        return QSize(max((item.minimumSize().width() for item in self._items), default=0), self._row_height())

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        self._arrange(rect, apply=True)

    def _arrange(self, rect: QRect, apply: bool) -> int:
        if not self._items:
            return 0
        columns, gap, height = self.columns(rect.width()), self.spacing(), self._row_height()
        width = (rect.width() - (columns - 1) * gap) // columns
        rows = (len(self._items) + columns - 1) // columns
        if apply:
            for i, item in enumerate(self._items):
                row, column = divmod(i, columns)
                item.setGeometry(
                    QRect(rect.x() + column * (width + gap), rect.y() + row * (height + gap), width, height)
                )
        return rows * height + (rows - 1) * gap


class Dashboard(QStackedWidget):
    """Live view of a run; ``layer_clicked(name)`` comes from the SQNR bars."""

    layer_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("dashboard")
        self.hint = EmptyState()
        self.addWidget(self.hint)
        self.page = QWidget()
        self.addWidget(self.page)
        self.output_card = Card("Output SQNR")
        self.size_card = Card("Size")
        self.layers_card = Card("Layers")
        self.coverage_card = Card("Coverage")
        self.calib_card = Card("Calibration")
        self.metric_card = Card("Metric")
        self.calib_bar = QProgressBar(objectName="calibration_progress", textVisible=False, maximumHeight=6)
        self.calib_card.add_extra(self.calib_bar)
        cards = CardGrid()
        for card in self.cards():
            cards.addWidget(card)
        self.card_grid = cards
        self.sqnr_plot = SqnrPlot()
        self.sqnr_plot.layer_clicked.connect(self.layer_clicked)
        self.size_plot = SizePlot()
        splitter = QSplitter(Qt.Orientation.Vertical, objectName="dashboard_split")
        self.splitter = splitter
        splitter.addWidget(
            self._titled(
                "Per-layer SQNR",
                self.sqnr_plot,
                "bars: weights · dots: layer outputs · line: model output · "
                "drag or scroll to pan · click a bar to find its layer",
            )
        )
        splitter.addWidget(self._titled("Model size", self.size_plot, ""))
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self.page)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addLayout(cards)
        layout.addWidget(splitter, 1)
        self._original = 0
        self._saved = 0
        self._n_layers = 0
        self._done = 0

    def cards(self) -> tuple[Card, ...]:
        return (
            self.output_card,
            self.metric_card,
            self.size_card,
            self.layers_card,
            self.coverage_card,
            self.calib_card,
        )

    @staticmethod
    def _titled(title: str, body: QWidget, note: str) -> QWidget:
        box = QWidget()
        grid = QGridLayout(box)
        grid.setContentsMargins(0, 6, 0, 0)
        label = QLabel(f"<b>{title}</b>")
        grid.addWidget(label, 0, 0)
        if note:  # two lines at most, whatever the width: the plot keeps the height (the tooltip has it all)
            hint = CardText(note, "color: palette(placeholder-text);", lines=2, wrap=True)
            hint.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            grid.addWidget(hint, 0, 1)
            grid.setColumnStretch(1, 1)
        grid.addWidget(body, 1, 0, 1, 2)
        grid.setRowStretch(1, 1)
        return box

    # -- states ---------------------------------------------------------------------------
    def show_hint(self, title: str, text: str, actions: list[Any] | None = None) -> None:
        """Show the empty state (no run to show yet)."""
        self.hint.set_content(title, text, actions or [])
        self.setCurrentWidget(self.hint)

    def clear(self) -> None:
        """No run to show: empty plots and cards (the inputs changed)."""
        self.begin_run([], 0, False, None)
        self.size_card.set("—", "no run yet")
        self.layers_card.set("—", "no run yet")
        self.coverage_card.set("—", "no run yet")
        self.output_card.set("—", "no run yet")
        self.metric_card.set("—", "no run yet")

    def begin_run(
        self, names: list[str], original_bytes: int, static: bool, warn_db: float | None, metric: str | None = None
    ) -> None:
        """Reset for a run over the layers ``names`` of a model of ``original_bytes``; ``metric``: the
        task metric's name when the run measures one."""
        self.setCurrentWidget(self.page)
        self._original, self._saved, self._n_layers, self._done = original_bytes, 0, len(names), 0
        self.sqnr_plot.reset(names, warn_db)
        self.size_plot.set_sizes(original_bytes, None)
        self.output_card.set("…", "measured after the last layer")
        if metric is not None:
            self.metric_card.set("…", "measured after validation")
        else:
            self.metric_card.set(NO_METRIC_VALUE, NO_METRIC)
        self.metric_card.setToolTip(f"{metric}(model) of the model script" if metric else NO_METRIC_TIP)
        self.size_card.set(format_bytes(original_bytes), "float model")
        self.layers_card.set(f"0 / {len(names)}", "quantizing")
        self.coverage_card.set("…", "measured after the last layer")
        self.coverage_card.setToolTip("")
        self.calib_bar.setRange(0, 1)
        self.calib_bar.setValue(0)
        if static:
            self.calib_card.set("…", "waiting to start")
        else:
            self.calib_card.set("—", "not needed in this mode")
        self.calib_bar.setVisible(static)

    def set_calibration(self, done: int, total: int) -> None:
        """Calibration progress in samples."""
        self.calib_bar.setRange(0, max(total, 1))
        self.calib_bar.setValue(min(done, total))
        self.calib_card.set(f"{done} / {total}", "files observed" if done < total else "activation ranges set")

    def add_layers(self, layers: list[Any]) -> None:
        """Finished layers (LayerReports): bars, layer count and a running size estimate."""
        self.sqnr_plot.add_layers(layers)
        for layer in layers:
            self._saved += layer.original_bytes - layer.quantized_bytes
            self._done += 1
        self.layers_card.set(f"{self._done} / {self._n_layers}", "quantizing")
        estimate = max(self._original - self._saved, 0)
        self.size_plot.set_sizes(self._original, estimate)
        self.size_card.set(format_bytes(estimate), f"from {format_bytes(self._original)} (so far)")

    def finish(self, report: Any) -> None:
        """Final figures of a report (also when its checks failed)."""
        self.sqnr_plot.add_layers(report.layers)
        self.sqnr_plot.set_model_sqnr(report.output_sqnr_db)
        self.size_plot.set_sizes(report.original_bytes, report.quantized_bytes, report.file_bytes)
        ratio = f"{report.compression_ratio:.2f}× smaller" if report.compression_ratio else ""
        self.size_card.set(
            format_bytes(report.quantized_bytes), f"from {format_bytes(report.original_bytes)} · {ratio}"
        )
        low = sum(1 for layer in report.layers if layer.status == "low-sqnr")
        self.layers_card.set(
            f"{len(report.layers)}",
            f"quantized · {len(report.skipped)} kept in float" + (f" · {low} low SQNR" if low else ""),
        )
        self.coverage_card.set(*coverage_figures(report))
        self.coverage_card.setToolTip(coverage_tooltip(report))
        detail, color = output_verdict(report)
        target = sqnr_target(report)
        if target is not None and report.passed:
            detail, color = f"{target[0]} · {detail}", target[1]
        self.output_card.set(format_db(report.output_sqnr_db), detail, color)
        self.metric_card.set(*metric_figures(report))
        self.metric_card.setToolTip(metric_tooltip(report))
        if report.calibration_samples:
            self.calib_bar.setRange(0, report.calibration_samples)
            self.calib_bar.setValue(report.calibration_samples)
            self.calib_card.set(
                str(report.calibration_samples), f"calibration files · {report.calibration_method or ''} observer"
            )

    def set_file_size(self, nbytes: int) -> None:
        """The saved file's size, as the third size bar."""
        original, quantized, _ = self.size_plot.sizes
        self.size_plot.set_sizes(original, quantized, nbytes)

    def stopped(self, why: str) -> None:
        """A run ended without a result (cancelled or failed)."""
        self.layers_card.set(f"{self._done} / {self._n_layers}", why)
        self.coverage_card.set("—", why)
        self.output_card.set("—", why)
        if self.metric_card.value.text() == "…":
            self.metric_card.set("—", why)
        if self.calib_bar.isVisible() and self.calib_bar.value() < self.calib_bar.maximum():
            self.calib_card.set(self.calib_card.value.text(), why)
