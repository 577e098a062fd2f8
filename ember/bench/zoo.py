"""The `make bench` driver: zoo models x thread counts, against the installed peers.

    python -m ember.bench.zoo                                   # the full set, threads 1 and 2
    python -m ember.bench.zoo --models mlp,resnet8 --threads 1 --runs 10 --min-seconds 0

Writes bench/results/latest.json and latest.md and appends a summary line to history.jsonl.
Another part of the report (say, kernel GFLOP/s) is a `report.Section`: pass its maker to
main(sections=[...]) and it lands in the same JSON (under "sections") and Markdown.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ember.bench.harness import ModelResult, Settings, bench_model
from ember.bench.machine import machine_info
from ember.bench.models import BenchError
from ember.bench.options import add_bench_options, count
from ember.bench.report import Section, write_json, write_text, zoo_markdown
from ember.bench.runners import REFERENCE
from ember.bench.stats import geomean

MODELS = ("resnet18", "mobilenet_v2", "bert_encoder", "resnet8", "ds_cnn", "mlp")
THREADS = (1, 2)
RESULTS = Path("bench/results")


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_models(models: Sequence[str], threads: Sequence[int], base: Settings) -> list[dict[str, Any]]:
    """One entry per (model, threads): a ModelResult's JSON, or the error that stopped it."""
    entries = []
    todo = [(m, t) for m in models for t in threads]
    for k, (model, t) in enumerate(todo, 1):
        progress(f"== {model}, {t} thread(s) ({k}/{len(todo)})")
        try:
            result: ModelResult = bench_model(model, Settings(t, base.runs, base.warmup,
                                                              base.peers, base.seed,
                                                              base.min_seconds), None, progress)
            entries.append(result.to_json())
        except Exception as e:        # one model failing must not lose the others' results
            message = str(e).splitlines()[0] if str(e) else e.__class__.__name__
            progress(f"[{model} t={t}] error: {message}")
            entries.append({"model": model, "threads": t, "error": message})
    return entries


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Geometric means of each runtime's ratio to onnxruntime per thread count; Ember's worst."""
    ratios: dict[str, dict[str, list[float]]] = {}
    worst: dict[str, Any] | None = None
    notes: dict[str, None] = {}
    for e in entries:
        for r in e.get("results", []):
            if r["status"] != "ok":
                notes[f"{r['runtime']}: {r['status']}: {r['reason'].splitlines()[0]}"] = None
            elif r["ratio"] is not None and r["runtime"] != REFERENCE:
                ratios.setdefault(r["runtime"], {}).setdefault(str(e["threads"]), []).append(r["ratio"])
                if r["runtime"] == "ember" and (worst is None or r["ratio"] > worst["ratio"]):
                    worst = {"model": e["model"], "threads": e["threads"], "ratio": r["ratio"]}
        notes.update({f"{e['model']} at {e['threads']} thread(s): {n}": None
                      for n in e.get("notes", [])})
        if "error" in e:
            notes[f"{e['model']} at {e['threads']} thread(s) failed: {e['error']}"] = None
    return {"geomean_vs_ort": {rt: {t: geomean(v) for t, v in by_threads.items()}
                               for rt, by_threads in ratios.items()},
            "worst_ember_vs_ort": worst, "notes": list(notes)}


def build_document(machine: dict[str, Any], entries: list[dict[str, Any]],
                   settings: dict[str, Any], sections: Sequence[Section] = ()) -> dict[str, Any]:
    return {"kind": "ember-zoo-bench", "machine": machine, "settings": settings,
            "entries": entries, "summary": summarize(entries),
            "sections": {s.key: {"title": s.title, "data": s.data, "markdown": s.markdown}
                         for s in sections}}


def write_results(document: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "latest.json", document)
    write_text(out_dir / "latest.md", zoo_markdown(document))
    git = document["machine"].get("git") or {}
    line = {"date": document["machine"]["date"], "commit": git.get("commit"),
            "dirty": git.get("dirty"), **document["settings"],
            "geomean_ember_vs_ort": document["summary"]["geomean_vs_ort"].get("ember", {}),
            "worst_ember_vs_ort": document["summary"]["worst_ember_vs_ort"],
            "failed": [f"{e['model']}@{e['threads']}" for e in document["entries"] if "error" in e]}
    with open(out_dir / "history.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from ember.zoo import ZOO

    def model_list(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        unknown = [n for n in names if n not in ZOO]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown zoo model(s) {', '.join(unknown)}; the "
                                             f"zoo has {', '.join(ZOO)}")
        return names

    def thread_list(text: str) -> tuple[int, ...]:
        return tuple(dict.fromkeys(count(1)(t) for t in text.split(",") if t.strip())) or THREADS

    parser = argparse.ArgumentParser(prog="python -m ember.bench.zoo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=model_list, default=MODELS, metavar="A,B",
                        help=f"zoo models (default {','.join(MODELS)})")
    parser.add_argument("--threads", type=thread_list, default=THREADS, metavar="N,M",
                        help=f"thread counts (default {','.join(map(str, THREADS))})")
    parser.add_argument("--out", type=Path, default=RESULTS, metavar="DIR",
                        help=f"where the reports go (default {RESULTS})")
    add_bench_options(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None,
         sections: Sequence[Callable[[], Section]] = ()) -> int:
    args = parse_args(argv)
    try:
        base = Settings(1, args.runs, args.warmup, args.peers, args.seed, args.min_seconds)
    except BenchError as e:
        print(f"ember bench: error: {e}", file=sys.stderr)
        return 2
    machine = machine_info()          # before the runs: the load average at the start
    entries = run_models(args.models, args.threads, base)
    settings = {"models": list(args.models), "threads": list(args.threads), "runs": args.runs,
                "min_seconds": args.min_seconds,
                "warmup": args.warmup, "peers": list(args.peers), "seed": args.seed}
    document = build_document(machine, entries, settings, [make() for make in sections])
    write_results(document, args.out)
    sys.stdout.write(zoo_markdown(document))
    print(f"wrote {args.out / 'latest.json'}, {args.out / 'latest.md'}; appended to "
          f"{args.out / 'history.jsonl'}", file=sys.stderr)
    return 1 if any("error" in e for e in entries) else 0


if __name__ == "__main__":
    from ember.bench.gemm import section as gemm_section
    sys.exit(main(sections=[gemm_section]))
