"""Charts drawn on the server as inline SVG: no script, no library, nothing fetched from elsewhere (the console
must work on a machine without internet). Every bar is a link to the rows it counts.

The colours are CSS classes (``console/static/console/console.css``), so the admin's dark theme applies."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

# The drawing's own coordinates; the SVG scales to its container's width.
WIDTH = 720
HEIGHT = 150
LEFT = 44  # room for the y axis' labels
BOTTOM = 20  # room for the x axis' labels
TOP = 8


@dataclass(frozen=True)
class Segment:
    """One part of a bar: ``value`` events, drawn in ``css_class``, linking to ``href``, named by ``label``."""

    value: int
    css_class: str
    href: str
    label: str


@dataclass(frozen=True)
class Bar:
    segments: Sequence[Segment]

    @property
    def total(self) -> int:
        return sum(segment.value for segment in self.segments)


def bar_chart(bars: Sequence[Bar], x_labels: dict[int, str], title: str, chart_id: str) -> SafeString:
    """Stacked vertical bars, one per slot (a minute), scaled to the highest bar; ``x_labels`` by slot."""
    peak = max((bar.total for bar in bars), default=0)
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT) / max(len(bars), 1)
    scale = plot_height / peak if peak else 0.0
    parts: list[SafeString] = []
    for index, bar in enumerate(bars):
        x = LEFT + index * slot
        y = float(HEIGHT - BOTTOM)
        for segment in bar.segments:
            if segment.value <= 0:
                continue
            # A bar of one event among thousands still gets a visible sliver (and so a target to click).
            height = max(segment.value * scale, 1.5)
            y -= height
            parts.append(
                format_html(
                    '<a href="{}" class="chart-link"><rect class="{}" x="{}" y="{}" width="{}" '
                    'height="{}" data-value="{}"><title>{}</title></rect></a>',
                    segment.href,
                    segment.css_class,
                    _number(x + 0.5),
                    _number(y),
                    _number(max(slot - 1.0, 1.0)),
                    _number(height),
                    segment.value,
                    segment.label,
                )
            )
    axis = format_html(
        '<line class="chart-axis" x1="{}" y1="{}" x2="{}" y2="{}"/>'
        '<text class="chart-label" x="{}" y="{}" text-anchor="end">{}</text>'
        '<text class="chart-label" x="{}" y="{}" text-anchor="end">0</text>',
        LEFT,
        HEIGHT - BOTTOM,
        WIDTH,
        HEIGHT - BOTTOM,
        LEFT - 6,
        TOP + 10,
        f"{peak:,}",
        LEFT - 6,
        HEIGHT - BOTTOM,
    )
    last = len(bars) - 1
    labels = format_html_join(
        "",
        '<text class="chart-label" x="{}" y="{}" text-anchor="{}">{}</text>',
        (
            # The last slot's label ends at the edge rather than running past it.
            (_number(WIDTH if index == last else LEFT + (index + 0.5) * slot), HEIGHT - 5, anchor, text)
            for index, text in sorted(x_labels.items())
            for anchor in ("end" if index == last else "middle",)
        ),
    )
    return format_html(
        '<svg class="chart" id="{}" viewBox="0 0 {} {}" role="img" aria-label="{}" '
        'preserveAspectRatio="xMinYMin meet">{}{}{}</svg>',
        chart_id,
        WIDTH,
        HEIGHT,
        title,
        axis,
        mark_safe("".join(parts)),  # each part built by format_html above
        labels,
    )


def _number(value: float) -> str:
    """A coordinate as SVG takes it (format_html escapes its arguments, so they arrive already as text)."""
    return f"{value:.1f}"


def share(value: int, peak: int) -> float:
    """``value`` as a percentage of ``peak``, for a horizontal bar's width (never 0 for a non-zero value)."""
    if peak <= 0 or value <= 0:
        return 0.0
    return max(round(100 * value / peak, 1), 1.0)
