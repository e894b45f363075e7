"""``make dashboard-preview``: draw the layout of the FsaAlerts dashboard to docs/dashboard.png.

Synthesizes the app (bundling skipped), reads the dashboard body from the monitoring template
and draws each widget at its x/y/width/height. Inside a metric widget, each FsaAlerts metric
gets a small line plot of the values ``make run`` emitted (the EMF lines in
.local/worker-run-*.log and .local/loader.log, one point per run); metrics it has no numbers
for (AWS/* ones, or all of them without a local run) are listed by name instead.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GRID_WIDTH = 24
INCH_PER_UNIT = (0.62, 0.36)  # one dashboard grid unit, across and down


def dashboard_body(template: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The dashboard body with every CloudFormation intrinsic replaced by a ``${...}``
    placeholder (alarm ARNs by ``${alarm:<name>}``), and the alarm names by logical id."""
    resources = template["Resources"]
    alarm_names = {
        logical_id: r["Properties"]["AlarmName"]
        for logical_id, r in resources.items()
        if r["Type"] in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")
    }

    def token(part: Any) -> str:
        if isinstance(part, str):
            return part
        ((kind, value),) = part.items()
        if kind == "Fn::GetAtt" and value[0] in alarm_names:
            return "${alarm:" + alarm_names[value[0]] + "}"
        return "${" + (value if isinstance(value, str) else ".".join(value)) + "}"

    (body,) = [
        r["Properties"]["DashboardBody"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Dashboard"
    ]
    if isinstance(body, dict):
        separator, parts = body["Fn::Join"]
        body = separator.join(token(p) for p in parts)
    return json.loads(body), alarm_names


def local_series(logs: Path) -> dict[tuple[str, str], list[float]]:
    """(metric name, source or "") -> its values, one per local run, from the EMF lines."""
    series: dict[tuple[str, str], list[float]] = defaultdict(list)
    files = sorted(logs.glob("loader.log")) + sorted(logs.glob("worker-run-*.log"))
    for log in files:
        for line in log.read_text(encoding="utf-8").splitlines():
            if not line.startswith('{"_aws"'):
                continue
            blob = json.loads(line)
            for directive in blob["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = blob[metric["Name"]]
                    series[(metric["Name"], blob.get("source", ""))] += value if isinstance(value, list) else [value]
    return dict(series)


def widget_lines(properties: dict[str, Any], series: dict[tuple[str, str], list[float]]):
    """What a metric widget shows: (label, values or None, on the right axis) per line."""
    for entry in properties.get("metrics", []):
        options = entry[-1] if isinstance(entry[-1], dict) else {}
        if options.get("visible") is False:
            continue
        if isinstance(entry[0], dict):  # math or search
            expression = entry[0]["expression"]
            search = re.search(r'MetricName="(\w+)"', expression)
            found = [(f"{n} {s}", v, False) for (n, s), v in series.items() if search and n == search.group(1)]
            yield from found or [(_static(entry[0].get("label", "")) or expression, None, False)]
            continue
        namespace, name = entry[0], entry[1]
        right = options.get("yAxis") == "right"
        if namespace == "FsaAlerts":
            yield options.get("label") or name, series.get((name, "")), right
        else:  # e.g. "Lambda Duration: P90"
            label = _static(options.get("label", ""))
            shown = f"{namespace.removeprefix('AWS/')} {name}"
            yield (f"{shown}: {label}" if label and label != name else shown), None, right


def _static(label: str) -> str:
    """A metric label without its dynamic parts, e.g. " (avg: ${AVG})"."""
    return re.sub(r"\s*\([^)]*\$\{[^)]*\)", "", label)


def draw(body: dict[str, Any], series: dict[tuple[str, str], list[float]], out: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # labels hold "${AVG}" and the like
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    height = max(w["y"] + w["height"] for w in body["widgets"])
    fig = plt.figure(figsize=(GRID_WIDTH * INCH_PER_UNIT[0], (height + 1) * INCH_PER_UNIT[1]))
    unit_w, unit_h = 1 / GRID_WIDTH, 1 / (height + 1)

    def box(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        return x * unit_w, 1 - (y + 1 + h) * unit_h, w * unit_w, h * unit_h

    fig.text(0.005, 1 - 0.5 * unit_h, f"Dashboard FsaAlerts (layout from the synthesized template; {note})",
             fontsize=11, va="center", weight="bold")  # fmt: skip
    for widget in body["widgets"]:
        props, kind = widget["properties"], widget["type"]
        left, bottom, w, h = box(widget["x"], widget["y"], widget["width"], widget["height"])
        inset = 0.08 * unit_w
        fig.add_artist(Rectangle((left + inset / 2, bottom + inset / 2), w - inset, h - inset / 2,
                                 transform=fig.transFigure, fill=kind == "text", facecolor="#f2f4f7",
                                 edgecolor="#9aa5b1", linewidth=0.8))  # fmt: skip
        if kind == "text":
            lines = props["markdown"].splitlines()
            title = re.sub(r"\*\*|\[|\]\([^)]*\)", "", lines[0].lstrip("# "))
            size = 12 if lines[0].startswith("## ") else 9
            fig.text(left + 0.3 * unit_w, bottom + h - 0.55 * unit_h, title, fontsize=size, weight="bold", va="center")
            rest = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", " ".join(lines[1:])).strip()
            if rest:
                wrapped = textwrap.fill(rest, width=int(widget["width"] * 7.2))
                fig.text(left + 0.3 * unit_w, bottom + h - 1.1 * unit_h, wrapped, fontsize=7, va="top")
            continue
        title = props.get("title", kind)
        fig.text(left + 0.3 * unit_w, bottom + h - 0.45 * unit_h, title, fontsize=8, weight="bold", va="center")
        if kind == "alarm":
            names = [re.sub(r"^\$\{alarm:(.*)\}$", r"\1", a) for a in props.get("alarms", [])]
            fig.text(left + 0.3 * unit_w, bottom + h - 0.9 * unit_h, "\n".join(names), fontsize=6, va="top")
            continue
        lines = list(widget_lines(props, series))
        plotted = [(label, values, right) for label, values, right in lines if values]
        ax = fig.add_axes((left + 0.9 * unit_w, bottom + 0.6 * unit_h, w - 1.8 * unit_w, h - 1.6 * unit_h))
        ax.tick_params(labelsize=6)
        if plotted:
            axes = {False: ax, True: ax.twinx() if any(right for *_, right in plotted) else ax}
            for n, (label, values, right) in enumerate(plotted):
                axes[right].plot(range(1, len(values) + 1), values, marker="o", markersize=3, linewidth=1.2,
                                 label=label, color=f"C{n}")  # fmt: skip
                axes[right].tick_params(labelsize=6)
            handles = [h for a in {id(a): a for a in axes.values()}.values() for h in a.get_legend_handles_labels()[0]]
            ax.legend(handles=handles, fontsize=5.5, loc="upper right", frameon=False)
            ax.set_xticks(range(1, max(len(v) for _, v, _ in plotted) + 1))
        else:
            ax.set_xticks([])
            ax.set_yticks([])
            names = "\n".join(label[: widget["width"] * 7] for label, *_ in lines[:8])
            ax.text(0.03, 0.95, names, fontsize=6, va="top", transform=ax.transAxes, color="#52606d")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dashboard-preview", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    parser.add_argument("--logs", type=Path, default=REPO / ".local", help="where `make run` left its logs")
    args = parser.parse_args(argv)

    from aws_cdk.assertions import Template

    from stacks.application import build_app
    from stacks.settings import cdk_json_context

    with tempfile.TemporaryDirectory(prefix="cdk.out.preview-") as outdir:
        app, stacks = build_app(context={**cdk_json_context(), "aws:cdk:bundling-stacks": []}, outdir=outdir)
        app.synth()
        body, _alarms = dashboard_body(Template.from_stack(stacks["monitoring"]).to_json())
    series = local_series(args.logs) if args.logs.is_dir() else {}
    runs = len(sorted(args.logs.glob("worker-run-*.log"))) if series else 0
    note = f"numbers from the {runs} worker runs of `make run`" if series else "no local run: `make run` first"
    draw(body, series, args.out, note)
    print(f"{args.out}: {len(body['widgets'])} widgets; {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
