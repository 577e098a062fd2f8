"""Sliding-window geometry shared by Conv, ConvTranspose and the pools.

One place reads the window attributes (kernel, strides, dilations, pads, auto_pad) and
computes output sizes and pads, so Conv, ConvTranspose, the pools and MaxUnpool cannot
disagree about them. It also writes the C that clips a window to the valid part of an axis,
which keeps padding checks out of the kernels' inner loops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ember.graph.ir import Node
from ember.ops.registry import fail, unsupported
from ember.render.cwriter import CWriter

AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")
#: bound on kernel, stride, dilation and pad values, so generated index arithmetic cannot overflow
_LARGEST = 1 << 31


@dataclass(frozen=True)
class Window:
    """How a window slides over the spatial axes. Tap k of output (or input, for a transposed
    window) position t lands at t*stride - pads_begin + k*dilation."""
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out: tuple[int, ...]          # output spatial shape

    @property
    def extent(self) -> tuple[int, ...]:
        """Span of the dilated kernel on each axis."""
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))


def int_attr(node: Node, name: str, count: int, default: int, minimum: int) -> tuple[int, ...]:
    """An integer-list attribute of `count` values >= minimum; `default` repeated when absent."""
    value = node.attrs.get(name)
    if value is None:
        return (default,) * count
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise fail(node, f"attribute {name} must be a list of integers") from None
    if len(out) != count:
        raise fail(node, f"attribute {name} has {len(out)} values, expected {count}")
    if any(v < minimum or v > _LARGEST for v in out):
        raise fail(node, f"attribute {name} values must be in [{minimum}, {_LARGEST}], "
                   f"got {list(out)}")
    return out


def auto_pad(node: Node) -> str:
    mode = node.attrs.get("auto_pad", "NOTSET") or "NOTSET"
    if mode not in AUTO_PADS:
        raise fail(node, f"auto_pad {mode!r} is not one of {', '.join(AUTO_PADS)}")
    return mode


def kernel_attr(node: Node, rank: int) -> tuple[int, ...]:
    """The kernel_shape attribute, which the pools require."""
    if node.attrs.get("kernel_shape") is None:
        raise fail(node, "attribute kernel_shape is required")
    return int_attr(node, "kernel_shape", rank, 1, 1)


def spatial_rank(node: Node, shape: tuple[int, ...], what: str = "input") -> int:
    """Number of spatial axes of an [N, C, D1, ...] tensor."""
    if len(shape) < 3:
        raise fail(node, f"{what} must have rank >= 3 ([N, C, spatial...]), got shape {list(shape)}")
    return len(shape) - 2


def _same_pads(total: int, mode: str) -> tuple[int, int]:
    """Split a total padding: SAME_UPPER puts the odd one at the end, SAME_LOWER at the start."""
    small = total // 2
    return (small, total - small) if mode == "SAME_UPPER" else (total - small, small)


def sliding_window(node: Node, in_sp: Sequence[int], kernel: tuple[int, ...],
                   ceil_mode: bool = False) -> Window:
    """Output size and pads of a forward window (Conv, the pools) for every auto_pad mode."""
    rank = len(in_sp)
    strides = int_attr(node, "strides", rank, 1, 1)
    dilations = int_attr(node, "dilations", rank, 1, 1)
    mode = auto_pad(node)
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if mode == "NOTSET":
        pads = int_attr(node, "pads", 2 * rank, 0, 0)
        begin, end = pads[:rank], pads[rank:]
    elif mode == "VALID":
        begin = end = (0,) * rank
    else:
        # Pad so that out = ceil(in / stride); a negative need (stride > extent) pads nothing.
        split = [_same_pads(max(0, (-(-i // s) - 1) * s + e - i), mode)
                 for i, s, e in zip(in_sp, strides, extent)]
        begin, end = tuple(b for b, _ in split), tuple(e for _, e in split)
    out = []
    for d in range(rank):
        span = in_sp[d] + begin[d] + end[d] - extent[d]
        if span < 0:
            raise fail(node, f"the kernel (extent {extent[d]} on spatial axis {d}) is larger than "
                       f"the padded input ({in_sp[d] + begin[d] + end[d]})")
        size = (-(-span // strides[d]) if ceil_mode else span // strides[d]) + 1
        if ceil_mode and (size - 1) * strides[d] >= in_sp[d] + begin[d]:
            size -= 1          # the last window must start inside the input or the left pad
        out.append(size)
    return Window(tuple(kernel), strides, dilations, tuple(begin), tuple(end), tuple(out))


def transposed_window(node: Node, in_sp: Sequence[int], kernel: tuple[int, ...],
                      output_padding: Sequence[int] | None = None,
                      output_shape: Sequence[int] | None = None) -> Window:
    """Output size and pads of a transposed window (ConvTranspose, MaxUnpool).

    Input position t writes output t*stride - pads_begin + k*dilation. When output_shape is
    given (or auto_pad is SAME_*, aiming at output = input * stride), the pads follow from it:
    SAME_UPPER puts the odd pad at the end, NOTSET and SAME_LOWER at the start, as onnxruntime.
    """
    rank = len(in_sp)
    strides = int_attr(node, "strides", rank, 1, 1)
    dilations = int_attr(node, "dilations", rank, 1, 1)
    adj = tuple(output_padding) if output_padding is not None else (0,) * rank
    mode = auto_pad(node)
    full = [s * (i - 1) + a + (k - 1) * d + 1
            for s, i, a, k, d in zip(strides, in_sp, adj, kernel, dilations)]
    same = mode in ("SAME_UPPER", "SAME_LOWER")
    if output_shape is not None or same:
        # SAME aims at input * stride but, as onnxruntime, never pads negatively: when the
        # stride outgrows the kernel the output keeps its natural size.
        target = output_shape or [i * s for i, s in zip(in_sp, strides)]
        split = [_same_pads(max(0, f - o), "SAME_UPPER" if mode == "SAME_UPPER" else "SAME_LOWER")
                 for f, o in zip(full, target)]
        begin, end = tuple(b for b, _ in split), tuple(e for _, e in split)
        out = (tuple(int(o) for o in output_shape) if output_shape is not None else
               tuple(f - b - e for f, b, e in zip(full, begin, end)))
    else:
        pads = int_attr(node, "pads", 2 * rank, 0, 0) if mode == "NOTSET" else (0,) * (2 * rank)
        begin, end = pads[:rank], pads[rank:]
        out = tuple(f - b - e for f, b, e in zip(full, begin, end))
    if any(o < 0 for o in out):
        raise fail(node, f"the pads are larger than the output (output shape {list(out)})")
    return Window(tuple(kernel), strides, dilations, tuple(begin), tuple(end), out)


def check_kernel(node: Node, kernel: tuple[int, ...], rank: int) -> None:
    """The kernel_shape attribute, when given, must agree with the weights' kernel."""
    given = node.attrs.get("kernel_shape")
    if given is not None and int_attr(node, "kernel_shape", rank, 1, 1) != kernel:
        raise fail(node, f"kernel_shape {list(given)} does not match the weights' {list(kernel)}")


def const_ints(node: Node, index: int, what: str) -> tuple[int, ...] | None:
    """A constant integer input (e.g. an output shape); None when omitted."""
    v = node.input(index)
    if v is None:
        return None
    if v.const is None:
        raise unsupported(node, f"a dynamic (non-constant) {what} input is not supported")
    return tuple(int(x) for x in v.const.reshape(-1))


def linear(terms: Sequence[tuple[str | None, int]], const: int = 0) -> str:
    """C text of sum(var * scale) + const, leaving out absent vars, zero scales, "* 1", "+ 0"."""
    parts = [v if k == 1 else f"{v} * {k}" for v, k in terms if v is not None and k != 0]
    text = " + ".join(parts)
    if const or not text:
        text = f"{text} {'-' if const < 0 else '+'} {abs(const)}" if text else str(const)
    return text


def emit_valid_range(w: CWriter, name: str, count: int, stride: int, offset: str,
                     limit: int) -> None:
    """Declare `{name}_lo`, `{name}_hi`: the t in [0, count) with 0 <= t*stride + o < limit,
    where o = `offset` is declared as `{name}_o`. Always lo <= hi, so hi - lo counts them."""
    o, lo, hi = f"{name}_o", f"{name}_lo", f"{name}_hi"
    w.line(f"const int64_t {o} = {offset};")
    if stride == 1:
        w.line(f"int64_t {lo} = {o} < 0 ? -{o} : 0;")
        w.line(f"int64_t {hi} = {limit} - {o} < {count} ? {limit} - {o} : {count};")
    else:
        w.line(f"int64_t {lo} = {o} < 0 ? (-{o} + {stride - 1}) / {stride} : 0;")
        w.line(f"int64_t {hi} = {limit} - {o} <= 0 ? 0 : ({limit} - {o} - 1) / {stride} + 1;")
        w.line(f"if ({hi} > {count}) {hi} = {count};")
    w.line(f"if ({lo} > {hi}) {lo} = {hi};")
