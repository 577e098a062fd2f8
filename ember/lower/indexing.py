"""Index arithmetic shared by kernels: strides, broadcasting, flat offsets as C expressions."""
from __future__ import annotations


def strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major element strides."""
    out = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        out[d] = out[d + 1] * shape[d + 1]
    return tuple(out)


def broadcast_strides(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Strides to read an input of `in_shape` broadcast (numpy rules) to `out_shape`; 0 where broadcast."""
    pad = len(out_shape) - len(in_shape)
    st = strides(in_shape)
    return tuple(0 if d < pad or in_shape[d - pad] == 1 else st[d - pad] for d in range(len(out_shape)))


def merge_strides(strides_: tuple[int, ...], shape: tuple[int, ...],
                  merged: tuple[int, ...]) -> tuple[int, ...] | None:
    """Strides over `merged`, a coarsening of `shape` (consecutive dims multiplied together),
    reading what `strides_` reads over `shape`; None where a merged group is not laid out as
    one run (its dims neither all contiguous nor all broadcast)."""
    out: list[int] = []
    d = 0
    for size in merged:
        group = [d]
        prod = shape[d] if d < len(shape) else 1
        while prod < size and d + 1 < len(shape):
            d += 1
            group.append(d)
            prod *= shape[d]
        if prod != size:
            return None
        if any(strides_[a] != strides_[a + 1] * shape[a + 1] for a in group[:-1]):
            return None
        out.append(strides_[group[-1]])
        d += 1
    return tuple(out) if d == len(shape) else None


def offset_expr(index_vars: list[str], strides_: tuple[int, ...]) -> str:
    """`i0*s0 + i1*s1 ...` skipping zero strides; "0" when nothing is left."""
    terms = [v if s == 1 else f"{v}*{s}" for v, s in zip(index_vars, strides_) if s != 0]
    return " + ".join(terms) if terms else "0"


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The numpy broadcast of `shapes`, or None when they do not broadcast."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for d in range(rank):
        dims = {s[d - rank + len(s)] for s in shapes if d - rank + len(s) >= 0}
        dims.discard(1)
        if len(dims) > 1:
            return None
        out.append(dims.pop() if dims else 1)
    return tuple(out)
