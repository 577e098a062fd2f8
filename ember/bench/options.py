"""Command-line options shared by `ember bench` and the zoo driver (`make bench`)."""
from __future__ import annotations

import argparse
from collections.abc import Callable

from ember.bench.runners import PEERS


def count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def peer_list(text: str) -> tuple[str, ...]:
    """`onnxruntime,openvino` -> ('onnxruntime', 'openvino'); empty or `none`: Ember alone."""
    names = [] if text.strip().lower() == "none" else [p.strip() for p in text.split(",") if p.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {', '.join(map(repr, unknown))}; "
                                         f"choose from {', '.join(PEERS)}")
    return tuple(dict.fromkeys(names))


def add_bench_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=count(1), default=50,
                        help="timed runs per runtime (default 50)")
    parser.add_argument("--min-seconds", type=float, default=1.0, metavar="S",
                        help="time more runs than --runs where the slowest runtime would run "
                             "less than S seconds in all (default 1; 0: exactly --runs)")
    parser.add_argument("--warmup", type=count(0), default=5,
                        help="untimed runs per runtime before timing (default 5)")
    parser.add_argument("--peers", type=peer_list, default=PEERS, metavar="A,B",
                        help=f"peers to compare with, when installed (default {','.join(PEERS)}; "
                             "'none' runs Ember alone)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
