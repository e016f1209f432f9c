"""Result rows, percentiles, the console table and bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
CHAOS_BEGIN, CHAOS_END = "<!-- chaos:begin -->", "<!-- chaos:end -->"
# Hand-written analysis (profiles, what bounds a missed target, proposed fixes): kept across runs.


@dataclass(frozen=True)
class Row:
    """One line of the table. `ratio` puts the value against something measured in the same run
    (`ratio_of` says what); `met` is None where the issue sets no target."""

    scenario: str
    measure: str
    value: str
    ratio: float | None = None
    ratio_of: str = ""
    target: str = ""
    met: bool | None = None

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.3g} × {self.ratio_of}"
        met = {True: "met", False: "MISSED", None: ""}[self.met]
        return [self.scenario, self.measure, self.value, ratio, self.target, met]


HEADER = ["scenario", "measure", "value", "ratio", "target", ""]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def print_row(row: Row) -> None:
    print(" | ".join(row.cells()), flush=True)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = psutil.virtual_memory().total / (1 << 30)
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, "
        f"Python {platform.python_version()} ({sys.executable})"
    )


def write_results(rows: list[Row], command: str, date: str, notes: list[str], path: Path = RESULTS) -> None:
    """Rewrite the top of RESULTS.md (this run's table and notes), keeping everything from the chaos
    section on: the sections other benches wrote there and the hand-written findings."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = old[old.index(CHAOS_BEGIN) :] if CHAOS_BEGIN in old else ""
    text = [
        "# procq benchmark results",
        "",
        f"- Machine: {machine()}",
        f"- Date: {date}",
        f"- Command: `{command}`",
        "",
        markdown_table(rows),
        "",
        *[f"- {note}" for note in notes],
        "",
        kept.rstrip("\n") or f"{CHAOS_BEGIN}\n(no chaos run recorded yet: `python bench/chaos.py`)\n{CHAOS_END}",
        "",
    ]
    path.write_text("\n".join(text), encoding="utf-8")


def write_chaos(
    output: str,
    command: str,
    date: str,
    path: Path = RESULTS,
    title: str = "Chaos: zero loss under crashes",
    marks: tuple[str, str] = (CHAOS_BEGIN, CHAOS_END),
) -> None:
    """Put a chaos run's output in RESULTS.md (between `marks`), replacing the previous one."""
    begin, end = marks
    block = f"{begin}\n## {title}\n\n- Date: {date}\n- Command: `{command}`\n\n```\n"
    block += output.rstrip() + f"\n```\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else "# procq benchmark results\n\n"
    old = _section(text, begin, end)
    text = text.replace(old, block) if old else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def _section(text: str, begin: str = CHAOS_BEGIN, end_mark: str = CHAOS_END) -> str:
    start, end = text.find(begin), text.find(end_mark)
    return text[start : end + len(end_mark)] if start >= 0 and end > start else ""
