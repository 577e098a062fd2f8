"""Render benchmark results: a text table for the terminal, JSON, and Markdown for the zoo.

The zoo's Markdown is rendered from its JSON document, so the two always agree. Extra
report sections (e.g. kernel GFLOP/s) travel as `Section`s and land in both.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ember.bench.harness import ModelResult
from ember.bench.runners import REFERENCE, RUNNERS

RATIO_NOTE = f"ratio: median latency / {REFERENCE}'s (below 1: faster than {REFERENCE})"


@dataclass
class Section:
    """A further part of a report: JSON data under `key`, and its Markdown under `title`."""
    key: str
    title: str
    data: Any
    markdown: str


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in (headers, *rows)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(headers), *(line(r) for r in rows)])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    align = ["---"] + ["---:"] * (len(headers) - 1)
    return "\n".join("| " + " | ".join(cells) + " |" for cells in (headers, align, *rows))


#: load average per core at the start from which timings are flagged: a `make bench` started
#: at 1.5 on 2 cores, right after a test run, read MobileNetV2 at 1 thread 1.04x onnxruntime
#: where quiet runs read 0.93-0.96
BUSY_LOAD_PER_CORE = 0.5


def busy_note(machine: dict[str, Any]) -> list[str]:
    """A warning when other work kept the machine's cores busy as the benchmark started."""
    load, cores = machine.get("load_average"), machine.get("usable_cores") or machine.get("cores")
    if not load or not cores or load[0] < BUSY_LOAD_PER_CORE * cores:
        return []
    return [f"note: the machine was busy (load average {load[0]:.1f} on {cores} cores): the "
            "timings are noisy, multi-threaded ones most"]


# -- one model (`ember bench`) ---------------------------------------------------------------
def format_table(result: ModelResult, machine: dict[str, Any] | None = None) -> str:
    s = result.settings
    timed = max((len(r.times_s) for r in result.results if r.ok), default=s.runs)
    head = (f"{result.model.name}: {_plural(s.threads, 'thread')}, {timed} timed runs after "
            f"{s.warmup} warm-up per runtime, each in its own process")
    rows, skipped = [], []
    for r in result.results:
        if not r.ok:
            skipped.append(f"  {r.runtime}: {r.status}: {r.reason}")
            continue
        st = r.stats()
        rows.append([r.runtime, _num(st["median_ms"], ".3f"), _num(st["p90_ms"], ".3f"),
                     _num(r.ratio, ".2f"), _num(r.peak_rss_mib, ".1f"),
                     _num(r.max_abs_diff, ".1e"), _num(r.load_s, ".2f")])
    table = text_table(["runtime", "median ms", "p90 ms", "ratio vs ORT", "peak RSS MiB",
                        "max |diff| vs ORT", "load s"], rows)
    return "\n".join([head, table, RATIO_NOTE + "; load s: compile or load time",
                      *(["skipped:"] + skipped if skipped else []), *result.notes,
                      *busy_note(machine or {})])


def bench_json(result: ModelResult, machine: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "ember-bench", "machine": machine, **result.to_json()}


def write_text(path: "str | os.PathLike", text: str) -> None:
    """Write through a temporary file beside `path`: a reader never sees half a report."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _strict(value: Any) -> Any:
    """JSON has no Infinity or NaN (an output that differs in shape differs by inf): strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_json(path: "str | os.PathLike", document: dict[str, Any]) -> None:
    write_text(path, json.dumps(_strict(document), indent=1, allow_nan=False) + "\n")


# -- the zoo (`make bench`) ------------------------------------------------------------------
def _result(entry: dict[str, Any], runtime: str) -> dict[str, Any] | None:
    return next((r for r in entry.get("results", []) if r["runtime"] == runtime
                 and r["status"] == "ok"), None)


def zoo_markdown(document: dict[str, Any]) -> str:
    """The Markdown report of a zoo document (see zoo.build_document)."""
    m, s, summary = document["machine"], document["settings"], document["summary"]
    git = m.get("git") or {}
    commit = (git.get("commit", "")[:10] + (" (with uncommitted changes)" if git.get("dirty") else "")
              ) if git else "unknown"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v and k != "ember")
    lines = ["# Ember benchmarks", "",
             f"{m['date']}, commit {commit}; {m['cpu']}, {m['cores']} cores"
             + (f" (load average {m['load_average'][0]} at the start)" if m.get("load_average")
                else "") + f"; {versions}.", "",
             f"Median of {s['runs']} timed runs (more where that took a runtime under "
             f"{s.get('min_seconds', 0):g} s) after {s['warmup']} warm-up per runtime, each "
             f"runtime in its own process, runs interleaved in rounds. {RATIO_NOTE}.", ""]
    peers = [p for p in s["peers"] if p != REFERENCE and
             any(_result(e, p) for e in document["entries"])]
    ember = RUNNERS["ember"].label
    headers = ["model", "threads", f"{ember} ms", "ORT ms", f"{ember}/ORT",
               *(f"{RUNNERS[p].label}/ORT" for p in peers), f"max diff {ember} vs ORT"]
    rows = []
    for e in document["entries"]:
        if "error" in e:
            rows.append([e["model"], str(e["threads"]), f"error: {e['error']}",
                         *[""] * (len(headers) - 3)])
            continue
        mine, ref = _result(e, "ember"), _result(e, REFERENCE)
        rows.append([e["model"], str(e["threads"]), _num(mine and mine["median_ms"], ".3f"),
                     _num(ref and ref["median_ms"], ".3f"), _num(mine and mine["ratio"], ".2f"),
                     *(_num((_result(e, p) or {}).get("ratio"), ".2f") for p in peers),
                     _num(mine and mine["max_abs_diff"], ".1e")])
    lines += [markdown_table(headers, rows), ""]
    means = summary["geomean_vs_ort"].get("ember", {})
    if means:
        worst = summary["worst_ember_vs_ort"]
        lines += ["Geometric mean of Ember/ORT: " + ", ".join(
            f"{_plural(int(t), 'thread')} {r:.2f}" for t, r in means.items())
            + f"; worst: {worst['model']} at {_plural(worst['threads'], 'thread')}, "
              f"{worst['ratio']:.2f}.", ""]
    lines += [f"- {note}" for note in summary["notes"] + busy_note(m)]
    for section in document.get("sections", {}).values():
        lines += ["", f"## {section['title']}", "", section["markdown"].rstrip()]
    return "\n".join(lines).rstrip() + "\n"
