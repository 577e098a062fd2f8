"""The `ember` command line: compile a model, run a compiled one, inspect what the compiler does.

    ember compile model.onnx -o model.ember/
    ember run model.ember/ --random
    ember inspect model.onnx --after eliminate-dead
    ember bench resnet8 --threads 2
    ember export model.tflite --target cortex-m4 -o model_m4/

Errors in the user's model or request print one line (`ember: error: ...`) and exit with
status 2; anything else is a bug in Ember: one line, exit status 1, a traceback with --debug.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import ember
from ember.bench.options import add_bench_options
from ember.errors import EmberError
from ember.passes.pipeline import pass_names

EXIT_USER_ERROR = 2
EXIT_BUG = 1

DESCRIPTION = """\
Ember compiles trained neural networks (ONNX) into self-contained C, builds them with the
system C compiler, and runs them. Run `ember COMMAND --help` for each command's options."""

EXAMPLES = """\
examples:
  ember compile mobilenet.onnx -o mobilenet.ember/ --input-shape input=1x3x224x224
  ember run mobilenet.ember/ --random
  ember run mobilenet.ember/ --input input=image.npy --save outputs/
  ember inspect mobilenet.onnx --after eliminate-dead
  ember bench mobilenet.onnx --threads 2 --json result.json
  ember export kws_int8.tflite --target cortex-m4 -o kws_m4/ --build"""

COMPILE_EXAMPLES = """\
examples:
  ember compile model.onnx                       # writes ./model.ember/ (never overwrites)
  ember compile model.onnx -o build/model/ --threads 4
  ember compile model.onnx --input-shape x=1x3x224x224 --input-shape mask=1x224

The output directory holds model.so, weights.bin, model.c and manifest.json; `ember run`
and ember.load() read it without needing a C compiler."""

RUN_EXAMPLES = """\
examples:
  ember run model.ember/ --random                 # random inputs of the right shapes
  ember run model.ember/ --input x=x.npy --save out/
  ember run model.ember/ --input x.npy            # a model with one input needs no name

Inputs are .npy files (numpy.save). --save writes one .npy per output."""

INSPECT_EXAMPLES = """\
examples:
  ember inspect model.onnx
  ember inspect model.onnx --after eliminate-dead --input-shape x=1x3x32x32

Prints every node (op, output types, FLOPs, bytes read and written, fused ops), then the
memory plan: each arena buffer's offset, size and lifetime, the peak arena and weight bytes."""

BENCH_EXAMPLES = """\
examples:
  ember bench resnet8                             # a model of ember.zoo, against every peer installed
  ember bench model.onnx --threads 2 --runs 100 --json result.json
  ember bench model.onnx --input-shape x=1x3x224x224 --peers onnxruntime

Each runtime (Ember, onnxruntime, OpenVINO, torch via onnx2torch) runs in its own process on
the same seeded inputs; timed runs are interleaved in rounds. Prints median and p90 latency,
the ratio to onnxruntime's median (below 1: faster), peak RSS, the largest output difference
from onnxruntime and the compile or load time. Peers not installed are listed and skipped
(`make bench` installs them)."""

EXPORT_EXAMPLES = """\
examples:
  ember export model.tflite --target cortex-m4 -o model_m4/
  ember export model.tflite --target c99-host -o model_host/ --build
  make -C model_m4 run INPUT=input.bin            # under QEMU; prints EMBER_OUTPUT lines

Writes a standalone C99 project: model.c/model.h (ember_model_run, EMBER_ARENA_BYTES, weights
as a const array), main.c, startup and linker script, a Makefile (make | make run INPUT=FILE |
make size) and report.json (arena, weight and code bytes, per layer). --build runs make and
adds what `size` says to report.json. Targets: {targets}."""


class UsageError(EmberError):
    """A command-line request that cannot be carried out as given."""


# -- argument parsing ---------------------------------------------------------------------
def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=1x3x224x224` (or with commas) -> (NAME, (1, 3, 224, 224)); `NAME=` is a scalar."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=DIMxDIM..., e.g. x=1x3x224x224; got {text!r}")
    parts = [p for p in re.split(r"[x,]", dims.strip()) if p.strip()] if dims.strip() else []
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dims of {name!r} must be integers, got {dims!r}") from None
    if any(d < 0 for d in shape):
        raise argparse.ArgumentTypeError(f"dims of {name!r} must not be negative, got {dims!r}")
    return name, shape


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's copy must not reset a --debug given before the subcommand.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="print a traceback on errors")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="report each compilation stage as it finishes")
    parser = argparse.ArgumentParser(
        prog="ember", description=DESCRIPTION, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ember {ember.__version__}")
    parser.add_argument("--debug", action="store_true", help="print a traceback on errors")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="report each compilation stage as it finishes")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    commands.required = True

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str,
                epilog: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                                  epilog=epilog, parents=[common],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(func=func)
        return sub

    def input_shapes(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--input-shape", metavar="NAME=SHAPE", action="append", default=[],
                         type=parse_input_shape,
                         help="shape of an input whose dims are symbolic, e.g. x=1x3x224x224 "
                              "(repeat for several inputs)")

    def shapes_and_opt(sub: argparse.ArgumentParser) -> None:
        input_shapes(sub)
        sub.add_argument("-O", "--opt-level", type=int, choices=range(4), default=3,
                         help="optimization level, 0 to 3 (default 3)")

    c = command("compile", cmd_compile, "compile an ONNX model into a directory", COMPILE_EXAMPLES)
    c.add_argument("model", help="the .onnx or .tflite file")
    c.add_argument("-o", "--output", metavar="DIR",
                   help="output directory (default: ./MODEL.ember, which must not exist yet)")
    shapes_and_opt(c)
    c.add_argument("--threads", type=positive_int, default=1,
                   help="threads the compiled model uses (default 1)")
    c.add_argument("--target", choices=sorted(ember.targets), default="host",
                   help="hardware to compile for (default: host, this machine)")

    r = command("run", cmd_run, "run a compiled model directory on inputs", RUN_EXAMPLES)
    r.add_argument("artifact", metavar="DIR", help="a directory written by `ember compile`")
    r.add_argument("--input", metavar="NAME=FILE", action="append", default=[],
                   help="an input as a .npy file (repeat for several inputs)")
    r.add_argument("--random", action="store_true",
                   help="fill the inputs not given with --input with random values")
    r.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    r.add_argument("--save", metavar="DIR", help="write each output to DIR as a .npy file")

    passes = "\n".join(f"  {name}" for name in pass_names(3))
    i = command("inspect", cmd_inspect, "show the graph, per-node costs and the memory plan",
                f"{INSPECT_EXAMPLES}\n\npasses, in pipeline order (for --after):\n{passes}\n")
    i.add_argument("model", help="the .onnx or .tflite file")
    i.add_argument("--after", metavar="PASS", choices=pass_names(3),
                   help="stop the pass pipeline after PASS (listed below); default: run it all")
    shapes_and_opt(i)

    b = command("bench", cmd_bench, "time a model on Ember and its peers, side by side",
                BENCH_EXAMPLES)
    b.add_argument("model", help="an .onnx file, or the name of a model in ember.zoo")
    b.add_argument("--threads", type=positive_int, default=1,
                   help="threads each runtime uses (default 1)")
    add_bench_options(b)
    b.add_argument("--json", metavar="PATH", help="also write every figure and the machine to PATH")
    input_shapes(b)

    from ember.targets import EMBEDDED_TARGETS
    x = command("export", cmd_export, "write a standalone C99 project for a microcontroller",
                EXPORT_EXAMPLES.format(targets=", ".join(EMBEDDED_TARGETS)))
    x.add_argument("model", help="the .tflite or .onnx file")
    x.add_argument("--target", required=True, metavar="TARGET",
                   help="the board: " + ", ".join(EMBEDDED_TARGETS))
    x.add_argument("-o", "--output", metavar="DIR", required=True,
                   help="the project directory (must not exist, unless --force)")
    x.add_argument("--force", action="store_true", help="replace the files in an existing DIR")
    x.add_argument("--build", action="store_true",
                   help="build the project (needs the target's toolchain) and record its sizes")
    shapes_and_opt(x)
    return parser


def _input_shapes(pairs: list[tuple[str, tuple[int, ...]]]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in pairs:
        if name in shapes:
            raise UsageError(f"--input-shape gives {name!r} twice")
        shapes[name] = shape
    return shapes


# -- compile ------------------------------------------------------------------------------
def cmd_compile(args: argparse.Namespace) -> int:
    model_path = Path(args.model)
    explicit = args.output is not None
    out = Path(args.output) if explicit else Path(model_path.stem + ".ember")
    _check_output_dir(out, explicit)
    start = time.perf_counter()
    model = ember.compile(model_path, target=args.target, threads=args.threads,
                          opt_level=args.opt_level, input_shapes=_input_shapes(args.input_shape))
    elapsed = time.perf_counter() - start
    _publish(out, model.save)
    print(f"compiled {str(model_path)!r} in {elapsed:.2f} s -> {str(out)!r}")
    for title, infos in (("inputs", model.inputs), ("outputs", model.outputs)):
        print(f"  {title}:")
        for info in infos:
            print(f"    {info.name!r}: {info.dtype} {list(info.shape)}")
    print(f"  kernels: {model.manifest.get('kernels', '?')}")
    stages = model.manifest.get("compile_seconds", {})
    if stages:
        print("  time:    " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()))
    print(f"  arena:   {format_bytes(model.arena_bytes)}")
    print(f"  weights: {format_bytes(model.weight_bytes)}")
    return 0


def _check_output_dir(out: Path, explicit: bool) -> None:
    """Refuse to overwrite anything the user did not name, or a directory not Ember's own."""
    from ember.runtime.cpu import MANIFEST
    if not os.path.lexists(out):
        return
    if not explicit:
        raise UsageError(f"{str(out)!r} already exists; name it with -o to overwrite it, "
                         "or choose another directory with -o")
    if not out.is_dir():
        raise UsageError(f"{str(out)!r} exists and is not a directory")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UsageError(f"{str(out)!r} is not empty and holds no Ember model; choose another "
                         "directory with -o")


def _publish(out: Path, write: Callable[[Path], Any]) -> None:
    """Let `write` fill a private directory inside `out`, then move its files into `out`.

    Moving replaces a file or symlink already there rather than writing through it, so
    nothing outside `out` is ever written, and a failed write leaves `out` as it was.
    """
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".ember-") as tmp:
        write(Path(tmp))
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, out / f.name)


# -- export -------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from ember.export import build_project, export_model
    from ember.targets import get_embedded_target
    target = get_embedded_target(args.target)
    out = Path(args.output)
    if os.path.lexists(out) and not args.force:
        raise UsageError(f"{str(out)!r} already exists; give --force to replace its files, "
                         "or choose another directory with -o")
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"{str(out)!r} exists and is not a directory")
    options = ember.CompileOptions(input_shapes=_input_shapes(args.input_shape),
                                   opt_level=args.opt_level)
    report = export_model(args.model, target, out, options)
    print(f"exported {args.model!r} for {target.name} -> {str(out)!r}")
    print(f"  arena:   {format_bytes(report['arena_bytes'])}")
    print(f"  weights: {format_bytes(report['weight_bytes'])}")
    if args.build:
        report = build_project(out)
        image = report["image"]
        print(f"  code:    {format_bytes(report['code_bytes'])}")
        print(f"  image:   flash {format_bytes(image['flash_bytes'])}, "
              f"RAM {format_bytes(image['ram_bytes'])}")
    return 0


# -- run ----------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    model = ember.load(args.artifact)
    feeds = _read_inputs(model, args.input)
    missing = [i for i in model.inputs if i.name not in feeds]
    if missing and not args.random:
        raise UsageError("no value for input(s) " + ", ".join(repr(i.name) for i in missing)
                         + "; give each with --input NAME=FILE.npy, or use --random")
    rng = np.random.default_rng(args.seed)
    for info in missing:
        feeds[info.name] = random_array(rng, info.dtype, info.shape)
    start = time.perf_counter()
    outputs = model.run(feeds)
    elapsed = time.perf_counter() - start
    how = f", random inputs (seed {args.seed})" if missing else ""
    print(f"ran {str(args.artifact)!r} in {elapsed * 1e3:.2f} ms{how}")
    for info in model.outputs:
        print(describe_array(info.name, outputs[info.name]))
    if args.save:
        files = output_file_names([info.name for info in model.outputs])

        def write(tmp: Path) -> None:
            for info, file in zip(model.outputs, files):
                np.save(tmp / file, outputs[info.name])
        _publish(Path(args.save), write)
        for info, file in zip(model.outputs, files):
            print(f"saved {info.name!r} to {str(Path(args.save) / file)!r}")
    return 0


def _read_inputs(model: "ember.CompiledModel", specs: list[str]) -> dict[str, np.ndarray]:
    names = [i.name for i in model.inputs]
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        # The longest input name that `spec` starts with, then "="; names may hold "=" too.
        name = max((n for n in names if spec.startswith(n + "=")), key=len, default=None)
        if name is not None:
            path = spec[len(name) + 1:]
        elif len(names) == 1 and "=" not in spec:
            name, path = names[0], spec
        else:
            raise UsageError(f"--input {spec!r} names no input of the model; its inputs are "
                             + ", ".join(repr(n) for n in names))
        if name in feeds:
            raise UsageError(f"--input gives {name!r} twice")
        feeds[name] = _load_npy(path)
    return feeds


def _load_npy(path: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise UsageError(f"{path!r} is not a readable .npy file ({e})") from None
    if not isinstance(array, np.ndarray):     # an .npz archive
        array.close()
        raise UsageError(f"{path!r} is an .npz archive; give one .npy file per input")
    return array


def random_array(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Random values fit for `dtype`: standard normal floats, small non-negative integers."""
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(0, 10, shape).astype(dtype)


def describe_array(name: str, a: np.ndarray) -> str:
    head = f"{name!r}: {a.dtype} {list(a.shape)}"
    if a.size == 0:
        return head + " (empty)"
    flat = a.reshape(-1)
    shown = np.array2string(flat[:6], precision=5, separator=", ")
    lines = [head, f"  values: {shown[:-1]}{', ...]' if a.size > 6 else ']'}"]
    if a.dtype.kind == "b":
        lines.append(f"  true: {int(flat.sum())} of {a.size}")
    else:
        finite = flat[np.isfinite(flat)] if a.dtype.kind == "f" else flat
        stats = (f"  min {finite.min():.6g}  max {finite.max():.6g}  mean {finite.mean():.6g}"
                 if finite.size else "  no finite values")
        if finite.size < a.size:
            stats += f"  (non-finite: {a.size - finite.size})"
        lines.append(stats)
    return "\n".join(lines)


def output_file_names(names: list[str]) -> list[str]:
    """A safe, distinct .npy file name for each output name (names come from the model)."""
    files: list[str] = []
    taken: set[str] = set()          # lower-cased: some file systems ignore case
    for k, name in enumerate(names):
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")[:100] or f"output{k}"
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}_{n}"
        taken.add(stem.lower())
        files.append(f"{stem}.npy")
    return files


# -- inspect ------------------------------------------------------------------------------
def cmd_inspect(args: argparse.Namespace) -> int:
    from ember.cli_inspect import inspect_model
    options = ember.CompileOptions(input_shapes=_input_shapes(args.input_shape),
                                   opt_level=args.opt_level)
    sys.stdout.write(inspect_model(Path(args.model), options, args.after))
    return 0


# -- bench --------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> int:
    from ember.bench import harness, report
    from ember.bench.machine import machine_info
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UsageError(f"--json {args.json!r}: its directory does not exist")
    settings = harness.Settings(args.threads, args.runs, args.warmup, args.peers, args.seed,
                                args.min_seconds)
    machine = machine_info()          # before the runs: the load average at the start
    result = harness.bench_model(args.model, settings, _input_shapes(args.input_shape),
                                 progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(report.format_table(result, machine))
    if args.json:
        report.write_json(args.json, report.bench_json(result, machine))
        print(f"wrote {args.json!r}")
    return 0


def format_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


# -- errors -------------------------------------------------------------------------------
def report_error(e: EmberError, debug: bool) -> None:
    """One line (plus the list of problems, if any); the full text only with --debug."""
    lines = str(e).splitlines() or [e.__class__.__name__]
    if debug:
        traceback.print_exc()
        shown = lines
    else:
        problems = [f"  - {p}" for p in e.problems]
        shown = [lines[0] + (" (--debug shows more)" if len(lines) > 1 + len(problems) else "")]
        shown += problems
    print(f"ember: error: {shown[0]}", file=sys.stderr)
    for line in shown[1:]:
        print(line, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):   # model names may not fit the terminal's encoding
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(format="ember: %(message)s", level=logging.INFO, stream=sys.stderr)
    try:
        return args.func(args)
    except EmberError as e:
        report_error(e, args.debug)
        return EXIT_USER_ERROR
    except BrokenPipeError:           # `ember inspect ... | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:
        if args.debug:
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        print(f"ember: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        hint = "" if args.debug else "; rerun with --debug for the traceback"
        print(f"ember: error: internal error ({e.__class__.__name__}: {e}); this is a bug in "
              f"Ember, please report it{hint}".replace("\n", " "), file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
