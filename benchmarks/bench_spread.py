"""Spread of repeated ``ssl-toolkit bench`` runs, from the JSON lines that ``bench --json FILE`` appends.

    python benchmarks/bench_spread.py FILE.jsonl [FILE.jsonl ...]

For each file: the runs' median overhead (each run's own median over its steps), the smallest
first quartile of any run (below 0 would mean a step shorter than its own backbone), the step and
backbone images/s, and per part the median over runs of each run's median in ms and share, as a
Markdown table.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def spread(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    overhead = [r["overhead"]["median"] for r in rows]
    step, backbone = [r["step_img_s"] for r in rows], [r["backbone_img_s"] for r in rows]
    lines = [
        f"{path}: {len(rows)} runs of `ssl-toolkit bench {rows[0]['command']}`",
        "",
        f"* overhead, each run's median: {', '.join(f'{x:.3f}' for x in overhead)}; median of the runs "
        f"{statistics.median(overhead):.3f}, range {min(overhead):.3f} - {max(overhead):.3f}; smallest first "
        f"quartile {min(r['overhead']['q1'] for r in rows):.3f}",
        f"* step images/s: median {statistics.median(step):.1f}, range {min(step):.1f} - {max(step):.1f}; "
        f"backbone fwd+bwd in the step: median {statistics.median(backbone):.1f}, "
        f"range {min(backbone):.1f} - {max(backbone):.1f}",
        "",
        "| part | median ms (median of runs) | range of the runs' medians | share (median of runs) |",
        "|---|---:|---:|---:|",
    ]
    for key in rows[0]["parts_ms"]:
        medians = [r["parts_ms"][key]["median"] for r in rows]
        share = statistics.median(r["shares"][key] for r in rows) if key in rows[0]["shares"] else 1.0
        lines.append(
            f"| {key} | {statistics.median(medians):.2f} | {min(medians):.2f} - {max(medians):.2f} | {share:.1%} |"
        )
    return lines


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print("\n".join(spread(Path(name))) + "\n")
