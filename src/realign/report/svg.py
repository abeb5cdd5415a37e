"""Inline SVG charts (no scripts, no network): outcome bars, histograms, count and share bars."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from realign.judge import OutcomeStats

WIN, TIE, LOSE = "#2e7d32", "#9e9e9e", "#c62828"
SERIES = ("#1565c0", "#ef6c00")


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _label_width(labels: Iterable[str]) -> int:
    """Room for the longest left-hand label (about 7 px per character at 12 px)."""
    return max(120, min(360, 7 * max((len(s) for s in labels), default=0) + 12))


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(label)}" '
        f'font-family="system-ui,sans-serif" font-size="12">' + "".join(body) + "</svg>"
    )


def svg_outcome_bars(rows: Sequence[tuple[str, OutcomeStats]], label: str) -> str:
    """Horizontal 100% bars: B wins | ties | A wins, with the 95% interval of B's win rate
    drawn under its bar (through the bar it hid the percentages written on it)."""
    lw, bw, rh, bar = _label_width(f"{name} (n={st.n})" for name, st in rows), 420, 34, 20
    width, height = lw + bw + 20, 30 + rh * len(rows) + 6
    body = [
        f'<text x="{lw}" y="14" fill="{WIN}">■ B better</text>',
        f'<text x="{lw + 90}" y="14" fill="{TIE}">■ tie</text>',
        f'<text x="{lw + 140}" y="14" fill="{LOSE}">■ A better</text>',
        f'<text x="{lw + 230}" y="14" fill="#333">├┤ 95% interval of B\'s win rate</text>',
    ]
    for k, (name, st) in enumerate(rows):
        y = 24 + k * rh
        body.append(
            f'<text x="{lw - 6}" y="{y + 15}" text-anchor="end">{html.escape(name)} (n={st.n})</text>'
        )
        x = float(lw)
        for rate, colour, what in (
            (st.win.rate, WIN, "B better"),
            (st.tie.rate, TIE, "tie"),
            (st.lose.rate, LOSE, "A better"),
        ):
            w = bw * rate
            if w > 0:
                body.append(
                    f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colour}">'
                    f"<title>{html.escape(name)}: {what} {pct(rate)}</title></rect>"
                )
                if w > 28:
                    body.append(
                        f'<text class="share" x="{x + w / 2:.1f}" y="{y + 14}" '
                        f'text-anchor="middle" fill="#fff">{pct(rate)}</text>'
                    )
            x += w
        lo, hi = lw + bw * st.win.low, lw + bw * st.win.high
        cy = y + bar + 5  # in the gap under the bar
        body.append(
            f'<path class="interval" d="M{lo:.1f},{cy - 3:.1f}v6M{lo:.1f},{cy:.1f}H{hi:.1f}'
            f'M{hi:.1f},{cy - 3:.1f}v6" stroke="#000" stroke-width="1.5" fill="none">'
            f"<title>{html.escape(name)}: B better {pct(st.win.rate)}, 95% interval "
            f"{pct(st.win.low)}–{pct(st.win.high)}</title></path>"
        )
    return _svg(width, height, body, label)


def _ticks(peak: int) -> list[int]:
    """Up to five round values from 0 to at least `peak` for a count axis."""
    step = 1
    while peak / step > 4:
        for m in (2, 5, 10):
            if peak / (step * m) <= 4:
                step *= m
                break
        else:
            step *= 10
    return list(range(0, peak + step, step)) if peak else [0, 1]


def svg_histogram(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[int]]],
    label: str,
    *,
    x_title: str = "tokens per response",
    y_title: str = "responses",
) -> str:
    """Grouped vertical bars: one group per label, one bar per series (≤ 2 series), with both
    axes titled and ticked."""
    n, s = len(labels), max(1, len(series))
    gw = max(18, min(48, 560 // max(n, 1)))
    bw = (gw - 4) / s
    ch, top, left = 150, 24, 52
    # Tick labels wider than their group are turned (about 5.5 px a character at 10 px).
    longest = max((len(x) for x in labels), default=0)
    turn = longest * 5.5 > gw - 2
    drop = int(longest * 4.2) + 8 if turn else 14  # room the tick labels take under the axis
    width, height = left + gw * n + 10, top + ch + drop + 30
    ticks = _ticks(max([max(v, default=0) for _, v in series] + [0]))
    peak = ticks[-1]
    base = top + ch
    body = [
        f'<line x1="{left}" y1="{base}" x2="{width - 6}" y2="{base}" stroke="#999"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#999"/>',
    ]
    for si, (name, _) in enumerate(series):
        body.append(
            f'<text x="{left + si * 130}" y="14" fill="{SERIES[si % 2]}">■ {html.escape(name)}</text>'
        )
    for t in ticks:
        ty = base - ch * t / peak
        body.append(f'<line x1="{left - 4}" y1="{ty:.1f}" x2="{left}" y2="{ty:.1f}" stroke="#999"/>')
        body.append(
            f'<text class="tick" x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end" '
            f'font-size="10" fill="#666">{t}</text>'
        )
    for i, lab in enumerate(labels):
        gx = left + i * gw + 2
        for si, (name, values) in enumerate(series):
            v = values[i] if i < len(values) else 0
            h = ch * v / peak
            body.append(
                f'<rect x="{gx + si * bw:.1f}" y="{base - h:.1f}" width="{bw - 1:.1f}" '
                f'height="{h:.1f}" fill="{SERIES[si % 2]}"><title>{html.escape(name)}, '
                f"{html.escape(lab)}: {v}</title></rect>"
            )
        cx = gx + gw / 2 - 2
        body.append(f'<line x1="{cx:.1f}" y1="{base}" x2="{cx:.1f}" y2="{base + 4}" stroke="#999"/>')
        turned = f' transform="rotate(-40 {cx:.1f} {base + 12})"' if turn else ""
        body.append(
            f'<text class="tick" x="{cx:.1f}" y="{base + 15}" font-size="10" '
            f'text-anchor="{"end" if turn else "middle"}"{turned}>{html.escape(lab)}</text>'
        )
    body.append(
        f'<text class="axis-title" x="{left + gw * n / 2:.1f}" y="{height - 6}" '
        f'text-anchor="middle" fill="#444">{html.escape(x_title)}</text>'
    )
    body.append(
        f'<text class="axis-title" x="0" y="0" transform="translate(12 {base - ch / 2:.1f}) '
        f'rotate(-90)" text-anchor="middle" fill="#444">{html.escape(y_title)}</text>'
    )
    return _svg(width, height, body, label)


def svg_count_bars(rows: Sequence[tuple[str, int]], label: str, colour: str = SERIES[0]) -> str:
    lw, bw, rh = _label_width(name for name, _ in rows), 380, 22
    peak = max([v for _, v in rows] + [1])
    body = []
    for k, (name, v) in enumerate(rows):
        y = 6 + k * rh
        w = bw * v / peak
        body.append(f'<text x="{lw - 6}" y="{y + 13}" text-anchor="end">{html.escape(name)}</text>')
        body.append(f'<rect x="{lw}" y="{y}" width="{w:.1f}" height="{rh - 6}" fill="{colour}"/>')
        body.append(f'<text x="{lw + w + 4:.1f}" y="{y + 13}">{v}</text>')
    return _svg(lw + bw + 60, 12 + rh * len(rows), body, label)


def svg_share_bars(
    rows: Sequence[tuple[str, int, int]], label: str, colour: str = SERIES[0]
) -> str:
    """Horizontal bars of a share (part of whole, 0–100%), labelled `40% (2/5)`: a task type
    with 2 of 5 responses rewritten must not look smaller than one with 3 of 300."""
    lw, bw, rh = _label_width(name for name, _, _ in rows), 380, 22
    body = [
        f'<line x1="{lw + bw}" y1="0" x2="{lw + bw}" y2="{6 + rh * len(rows)}" '
        'stroke="#ccc" stroke-dasharray="3,3"/>'  # the 100% mark
    ]
    for k, (name, part, whole) in enumerate(rows):
        y = 6 + k * rh
        share = part / whole if whole else 0.0
        w = bw * share
        text = f"{pct(share)} ({part}/{whole})"
        body.append(f'<text x="{lw - 6}" y="{y + 13}" text-anchor="end">{html.escape(name)}</text>')
        body.append(
            f'<rect x="{lw}" y="{y}" width="{w:.1f}" height="{rh - 6}" fill="{colour}">'
            f"<title>{html.escape(name)}: {text}</title></rect>"
        )
        body.append(f'<text x="{lw + w + 4:.1f}" y="{y + 13}">{text}</text>')
    return _svg(lw + bw + 110, 12 + rh * len(rows), body, label)


def token_bins(
    values_by_series: Sequence[Sequence[int]], bins: int = 12
) -> tuple[list[str], list[list[int]]]:
    allv = [v for vs in values_by_series for v in vs] or [0]
    hi = max(allv) + 1
    step = max(1, -(-hi // bins))
    # Each bin's range, so a tick reads without the chart's caption: "0–49", "50–99".
    labels = [
        f"{k * step}" if step == 1 else f"{k * step}–{(k + 1) * step - 1}"
        for k in range(-(-hi // step))
    ]
    counts = []
    for vs in values_by_series:
        c = [0] * len(labels)
        for v in vs:
            c[min(v // step, len(labels) - 1)] += 1
        counts.append(c)
    return labels, counts
