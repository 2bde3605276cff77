"""OUT/<name>/report.html: one recording's results as a page a person opens in a browser.

Sections: the summary (summary.json's figures and its signal-quality verdict), ectopic (S, V)
beats over time, each class's most and least confident beats, and the rhythm strip. The page
is self-contained (images as base64 PNG, inline CSS, no script, nothing fetched), so it can be
mailed or archived alone. The signal is read back only around the beats shown (at most
GALLERY x 2 per class) and for the strip: never the whole recording.
"""

import base64
import html
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from raytasks.data import CLASS_NAMES, CLASS_SHORT, NUM_CLASSES
from raytasks.data.beats import WINDOW_S
from raytasks.recordings.predict import CLASS_COLOURS, read_span
from raytasks.recordings.quality import unusable

GALLERY = 6  # beats per row: the most confident, then the least confident, of each class
BEFORE_S, AFTER_S = 0.3, 0.5  # a beat's snippet around its R-peak: P wave to T wave
POOR_BIN = 0.2  # a time bin with more unusable 10-s windows than this is shaded
QUALITY_COLOURS = {"good": "#1b7f3b", "fair": "#b26a00", "poor": "#b3261e"}

# summary.json's keys as a person reads them, grouped; a key not listed shows under its name
GROUPS = {
    "Beats": {
        "beats": "beats detected",
        "mean_hr_bpm": "mean heart rate (bpm)",
        **{f"n_{c}": f"{c} beats ({n})" for c, n in zip(CLASS_SHORT, CLASS_NAMES)},
        "S_per_hour": "S beats per hour",
        "V_per_hour": "V beats per hour",
        "ectopic_per_hour": "ectopic (S + V) beats per hour",
        "longest_S_run": "longest run of S beats",
        "longest_S_run_at_s": "longest S run starts at (s)",
        "longest_V_run": "longest run of V beats",
        "longest_V_run_at_s": "longest V run starts at (s)",
    },
    "Signal quality": {
        "quality": "quality",
        "windows_10s": "10-s windows",
        "flat_windows_pct": "flat windows (%)",
        "saturated_windows_pct": "saturated windows (%)",
        "noisy_windows_pct": "noisy windows, high-frequency (%)",
        "wander_windows_pct": "windows with baseline wander (%)",
        "unusable_windows_pct": "unusable windows, any of these (%)",
        "rr_implausible_pct": "RR intervals < 0.2 s or > 3 s (%)",
        "rate_jump_minutes_pct": "minutes with a beat-rate jump (%)",
    },
    "Recording": {
        "recording": "recording",
        "file": "file",
        "duration_s": "duration (s)",
        "model": "model",
        "lead": "lead classified",
        "second_lead": "second lead, for detection",
    },
}


def write_report(dest: Path, rec: dict, beats: pd.DataFrame, summary: dict, strip: Path):
    """report.html for one recording (strip: the rhythm strip PNG already written)."""
    path, info = Path(rec["path"]), rec["info"]
    seconds = float(summary["duration_s"])
    bad = unusable(rec["windows"])
    gallery = gallery_html(path, info, beats)
    sections = [
        ("summary", "Summary", summary_html(summary)),
        ("ectopy", "Ectopic beats over the recording", ectopy_html(beats, seconds, bad)),
        ("classes", "Most and least confident beats of each class", gallery),
        ("strip", "Rhythm strip", strip_html(strip)),
    ]
    dest.write_text(page(summary, sections))


# ---------------------------------------------------------------- HTML


CSS = """
body { font: 15px/1.45 system-ui, sans-serif; color: #1f2328; background: #f6f7f9; margin: 0; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 0 0 10px; }
section { background: #fff; border: 1px solid #d8dce0; border-radius: 8px;
          padding: 16px 20px; margin: 16px 0; }
.sub { color: #57606a; margin: 0; }
.badge { display: inline-block; color: #fff; border-radius: 4px; padding: 1px 10px;
         font-weight: 600; text-transform: uppercase; font-size: 13px; vertical-align: 3px; }
.tables { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
table { border-collapse: collapse; min-width: 300px; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { text-align: left; padding: 3px 10px 3px 0; border-bottom: 1px solid #eef0f2;
         font-weight: normal; }
td { font-variant-numeric: tabular-nums; font-weight: 600; }
.hint { color: #57606a; font-weight: normal; margin-left: 6px; }
ul.reasons { margin: 6px 0 12px; } img { max-width: 100%; display: block; margin: 6px 0; }
h3 { font-size: 15px; margin: 14px 0 2px; } .note { color: #57606a; font-size: 13px; }
"""


def page(summary: dict, sections: list[tuple[str, str, str]]) -> str:
    name = html.escape(str(summary["recording"]))
    body = "".join(
        f'<section id="{sid}"><h2>{title}</h2>{content}</section>'
        for sid, title, content in sections
    )
    head = (
        f"<h1>Recording {name} {badge(summary.get('quality', ''))}</h1>"
        f'<p class="sub">{clock(float(summary["duration_s"]))} of ECG, '
        f"{summary['beats']} beats, model {html.escape(str(summary.get('model', '')))}</p>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{name}: beat report</title><style>{CSS}</style></head>"
        f"<body><main>{head}{body}</main></body></html>\n"
    )


def badge(quality: str) -> str:
    colour = QUALITY_COLOURS.get(quality, "#57606a")
    return f'<span class="badge" style="background:{colour}">{html.escape(quality)}</span>'


def summary_html(summary: dict) -> str:
    """The quality verdict and its reasons, then every figure of summary.json in tables."""
    reasons = summary.get("quality_reasons") or []
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons)
    verdict = f"<p>Signal quality {badge(summary.get('quality', '?'))}: " + (
        "because of</p>" if reasons else "no quality flag raised.</p>"
    )
    listed = {k for keys in GROUPS.values() for k in keys} | {"quality_reasons"}
    groups = dict(GROUPS)
    groups["Other"] = {k: k for k in summary if k not in listed}
    tables = "".join(table(title, labels, summary) for title, labels in groups.items())
    listing = f'<ul class="reasons">{items}</ul>' if items else ""
    return f'{verdict}{listing}<div class="tables">{tables}</div>'


def table(title: str, labels: dict, summary: dict) -> str:
    rows = "".join(
        f'<tr data-key="{k}"><th>{html.escape(label)}</th><td>{cell(k, summary[k])}</td></tr>'
        for k, label in labels.items()
        if k in summary
    )
    return f"<table><caption>{title}</caption>{rows}</table>" if rows else ""


def cell(key: str, value) -> str:
    """The value as summary.json holds it; times in s also as h:mm:ss."""
    if isinstance(value, float) and math.isnan(value):
        return '<span class="v">–</span>'
    text = f'<span class="v">{html.escape(str(value))}</span>'
    if key.endswith("_s") and isinstance(value, int | float):
        text += f'<span class="hint">{clock(float(value))}</span>'
    return text


def plural(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def clock(seconds: float) -> str:
    s = round(float(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def strip_html(strip: Path) -> str:
    return img(strip.read_bytes(), "rhythm strip") + (
        '<p class="note">The 20 s with the most non-normal beats; each dot is a detected beat, '
        "coloured by its class.</p>"
    )


# ---------------------------------------------------------------- figures


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_of(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    pyplot().close(fig)
    return buf.getvalue()


def time_bins(seconds: float) -> tuple[float, str]:
    """Bin width (s) and its name: hours for a Holter, finer for a short recording."""
    for width, name in ((3600, "hour"), (600, "10 minutes"), (60, "minute")):
        if seconds >= 3 * width:
            return width, name
    return 10.0, "10 seconds"


def ectopy_html(beats: pd.DataFrame, seconds: float, bad: np.ndarray) -> str:
    width, name = time_bins(seconds)
    note = (
        f'<p class="note">S and V beats in each {name} from the start of the recording'
        f"{'' if seconds % width == 0 else ' (the last bin is shorter)'}; shaded: bins where "
        f"over {100 * POOR_BIN:.0f}% of the 10-s windows are unusable (flat, saturated, "
        "noisy or wandering), where counts deserve less trust.</p>"
    )
    return img(ectopy_png(beats, seconds, bad, width, name), f"S and V beats per {name}") + note


def ectopy_png(beats, seconds: float, bad: np.ndarray, width: float, name: str) -> bytes:
    """Grouped bars: S and V beats per time bin, poor-signal bins shaded."""
    plt = pyplot()
    n = max(1, math.ceil(seconds / width))
    edges = np.arange(n) * width
    k = np.minimum((beats["time_s"].to_numpy() // width).astype(int), n - 1)
    fig, ax = plt.subplots(figsize=(13, 3.4))
    for c, shift in ((1, -0.2), (2, 0.2)):
        counts = np.bincount(k[beats["class"].to_numpy() == c], minlength=n)
        ax.bar(
            np.arange(n) + shift,
            counts,
            width=0.4,
            color=CLASS_COLOURS[c],
            label=f"{CLASS_SHORT[c]} ({CLASS_NAMES[c].lower()})",
        )
    per_bin = max(1, round(width / WINDOW_S))
    for i in range(n):
        share = bad[i * per_bin : (i + 1) * per_bin]
        if len(share) and share.mean() > POOR_BIN:
            ax.axvspan(i - 0.5, i + 0.5, color="0.85", zorder=0, label="_poor")
    shaded = [p for p in ax.patches if p.get_label() == "_poor"]
    if shaded:  # one legend entry for all the shaded bins
        shaded[0].set_label("poor signal")
    step = max(1, n // 24)
    cut = -3 if width >= 3600 else None  # h:mm for hours, h:mm:ss for shorter bins
    ax.set_xticks(np.arange(0, n, step), [clock(e)[:cut] for e in edges[::step]])
    ax.set_xlim(-0.6, n - 0.4)
    unit = "h:mm" if cut else "h:mm:ss"
    ax.set_xlabel(f"start of each {name} ({unit} from the start of the recording)")
    ax.set_ylabel("number of beats")
    ax.set_title(f"S and V beats in each {name}", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return png_of(fig)


def gallery_html(path: Path, info: dict, beats: pd.DataFrame) -> str:
    """One figure per class that has beats; classes without any are named in one line."""
    parts, absent = [], []
    for c in range(NUM_CLASSES):
        mine = beats[beats["class"] == c]
        if mine.empty:
            absent.append(CLASS_SHORT[c])
            continue
        title = f"{CLASS_SHORT[c]}: {CLASS_NAMES[c].lower()} ({plural(len(mine), 'beat')})"
        parts.append(f"<h3>{html.escape(title)}</h3>")
        parts.append(img(gallery_png(path, info, mine, c), f"{CLASS_SHORT[c]} beats"))
    note = (
        f'<p class="note">Top row of each class: the {GALLERY} beats the model is surest of; '
        f"bottom row: the {GALLERY} it is least sure of (a class with {GALLERY} beats or fewer: "
        "all of them, in one row). p = its probability for the class, the runner-up class in "
        "brackets (classes follow the model's recall-first offsets, so a runner-up can be the "
        f"more probable); {BEFORE_S} s before to {AFTER_S} s after each R-peak.</p>"
    )
    if absent:
        note += f'<p class="note">No beat classified as {", ".join(absent)}.</p>'
    return note + "".join(parts)


def pick(mine: pd.DataFrame, c: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The GALLERY most confident beats of class c and, among the rest, the least confident."""
    ranked = mine.sort_values(f"p_{CLASS_SHORT[c]}", ascending=False, kind="stable")
    top = ranked.head(GALLERY)
    return top, ranked.iloc[len(top) :].tail(GALLERY)[::-1]


def gallery_png(path: Path, info: dict, mine: pd.DataFrame, c: int) -> bytes:
    """Two rows of snippets of class c's beats (one when it has no more than GALLERY)."""
    plt = pyplot()
    top, low = pick(mine, c)
    # a class with no more than GALLERY beats shows them all, surest first, in one row
    rows = [("most confident", top), ("least confident", low)] if len(low) else [("all beats", top)]
    spans = snippets(path, info, np.r_[top["time_s"], low["time_s"]])
    fig, axes = plt.subplots(
        len(rows), GALLERY, figsize=(13, 2.0 * len(rows)), sharey=True, squeeze=False
    )
    i = 0
    for r, (label, chosen) in enumerate(rows):
        axes[r, 0].set_ylabel(label, fontsize=9)
        for j in range(GALLERY):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.tick_params(labelsize=7)
            if j >= len(chosen):
                ax.set_axis_off()
                continue
            beat, (tt, x) = chosen.iloc[j], spans[i]
            i += 1
            ax.plot(tt, x, color=CLASS_COLOURS[c], lw=1.0)
            ax.axvline(0, color="0.8", lw=0.6, zorder=0)
            ax.set_title(beat_title(beat, c), fontsize=8)
    fig.tight_layout()
    return png_of(fig)


def beat_title(beat: pd.Series, c: int) -> str:
    probs = np.array([beat[f"p_{s}"] for s in CLASS_SHORT])
    other = max((k for k in range(NUM_CLASSES) if k != c), key=lambda k: probs[k])
    return f"{clock(beat['time_s'])}  p {probs[c]:.2f} ({CLASS_SHORT[other]} {probs[other]:.2f})"


def snippets(path: Path, info: dict, times: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(time from the R-peak, samples) around each time, one read each (bounded in number)."""
    fs = info["fs"]
    lo, hi = np.maximum(0.0, times - BEFORE_S), times + AFTER_S
    if path.suffix.lower() == ".csv" and len(times):  # read_span parses a CSV whole: once
        t0 = float(lo.min())
        whole = read_span(path, info, t0, float(hi.max()))
        spans = [whole[round((a - t0) * fs) : round((b - t0) * fs)] for a, b in zip(lo, hi)]
    else:
        spans = [read_span(path, info, float(a), float(b)) for a, b in zip(lo, hi)]
    return [(a - t + np.arange(len(x)) / fs, x) for a, t, x in zip(lo, times, spans)]
