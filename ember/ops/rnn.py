"""Recurrent ops: RNN, GRU and LSTM (all directions, layouts, activations, sequence lengths).

One kernel per node. For each direction it walks the time steps; a step is a small GEMM over
the batch rows still running (x·Wᵀ + Wb and h·Rᵀ + Rb into two gate buffers, one weight row
against every batch row so the row stays in cache), then the cell's gate update per row.
The hidden (and cell) state lives in scratch in the element type, as the spec's H and C are.

Semantics follow onnxruntime where the spec leaves room:
- sequence_lens[b] (clamped to [0, seq_length]) stops row b early: Y is zero past it, Y_h/Y_c
  hold the last step that ran, and are zero for a row of length 0; a reverse direction reads
  the row's steps len-1 .. 0.
- activation_alpha/beta are consumed in order only by the functions that take them (Affine,
  LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid, Elu), with onnxruntime's defaults.
- clip bounds every gate's pre-activation (peephole and biases included).
An LSTM converted from TFLite may carry `cell_clip` (a CellClip, which no ONNX attribute can
hold): the cell state is clipped after each update, before the output gate reads it.
Arithmetic is in float for f16/f32 and double for f64.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Iterator

from ember.graph import dtypes as dt
from ember.graph.ir import Node, TensorType
from ember.ops.registry import OpDef, fail, register_op, unsupported
from ember.render.cwriter import c_float

_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
_DEFAULT_ACTS = {"RNN": ("Tanh",), "GRU": ("Sigmoid", "Tanh"), "LSTM": ("Sigmoid", "Tanh", "Tanh")}

# name -> (takes alpha, takes beta, default alpha, default beta, C template): as onnxruntime.
# The template reads {x} (a variable), {a}/{b} (literals), {m.fn} (libm function for the type).
_ACTIVATIONS = {
    "relu": (False, False, 0.0, 0.0, "({x} > 0 ? {x} : 0)"),
    "tanh": (False, False, 0.0, 0.0, "{m.tanh}({x})"),
    "sigmoid": (False, False, 0.0, 0.0, "(1 / (1 + {m.exp}(-{x})))"),
    "affine": (True, True, 0.0, 0.0, "({a} * {x} + {b})"),
    "leakyrelu": (True, False, 0.01, 0.0, "({x} >= 0 ? {x} : {a} * {x})"),
    "thresholdedrelu": (True, False, 0.0, 0.0, "({x} > {a} ? {x} : 0)"),
    "scaledtanh": (True, True, 0.0, 0.0, "({a} * {m.tanh}({b} * {x}))"),
    "hardsigmoid": (True, True, 0.2, 0.5, "{m.fmax}(0, {m.fmin}(1, {a} * {x} + {b}))"),
    "elu": (True, False, 1.0, 0.0, "({x} >= 0 ? {x} : {a} * ({m.exp}({x}) - 1))"),
    "softsign": (False, False, 0.0, 0.0, "({x} / (1 + {m.fabs}({x})))"),
    "softplus": (False, False, 0.0, 0.0, "({x} > 20 ? {x} : {m.log1p}({m.exp}({x})))"),
}


class _Libm:
    """Lets templates write {m.exp}: expf for float, exp for double."""
    def __init__(self, ctype: str) -> None:
        self.suffix = "f" if ctype == "float" else ""

    def __getattr__(self, name: str) -> str:
        return name + self.suffix


@dataclass(frozen=True)
class Act:
    name: str
    alpha: float
    beta: float

    def expr(self, x: str, acc: str) -> str:
        template = _ACTIVATIONS[self.name][4]
        return template.format(x=x, a=c_float(self.alpha, acc), b=c_float(self.beta, acc),
                               m=_Libm(acc))


@dataclass(frozen=True)
class CellClip:
    """TFLite's cell_clip: the LSTM's cell state is clipped to [-bound, bound] after each update."""
    bound: float


@dataclass(frozen=True)
class Dims:
    """The problem's sizes and where each tensor's rows live for the node's layout."""
    seq: int
    batch: int
    inp: int
    hidden: int
    dirs: int
    gates: int
    layout: int

    def x_at(self, t: str, b: str) -> str:
        row = f"{t} * {self.batch} + {b}" if self.layout == 0 else f"{b} * {self.seq} + {t}"
        return f"({row}) * {self.inp}"

    def y_at(self, t: str, d: str, b: str) -> str:
        row = (f"({t} * {self.dirs} + {d}) * {self.batch} + {b}" if self.layout == 0
               else f"({b} * {self.seq} + {t}) * {self.dirs} + {d}")
        return f"({row}) * {self.hidden}"

    def state_at(self, d: str, b: str) -> str:
        """Offset of row (d, b) in initial_h/initial_c/Y_h/Y_c."""
        row = f"{d} * {self.batch} + {b}" if self.layout == 0 else f"{b} * {self.dirs} + {d}"
        return f"({row}) * {self.hidden}"


def _dims(node: Node) -> Dims:
    """Validated sizes of the node's inputs (raises fail() on shapes that do not fit)."""
    x, w, r = (node.input(k) for k in range(3))
    if x is None or w is None or r is None:
        raise fail(node, "needs inputs X, W and R")
    layout = int(node.attrs.get("layout", 0))
    if layout not in (0, 1):
        raise fail(node, f"layout must be 0 or 1, got {layout}")
    direction = node.attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise fail(node, f"direction must be forward, reverse or bidirectional, got {direction!r}")
    dirs = 2 if direction == "bidirectional" else 1
    if x.type.rank != 3:
        raise fail(node, f"X must have rank 3, got {list(x.type.shape)}")
    seq, batch, inp = x.type.shape if layout == 0 else (x.type.shape[1], x.type.shape[0],
                                                         x.type.shape[2])
    if r.type.rank != 3:
        raise fail(node, f"R must have rank 3, got {list(r.type.shape)}")
    hidden = r.type.shape[2]
    if "hidden_size" in node.attrs and int(node.attrs["hidden_size"]) != hidden:
        raise fail(node, f"hidden_size {node.attrs['hidden_size']} does not match R's last "
                   f"dim {hidden}")
    gates = _GATES[node.op]
    d = Dims(seq, batch, inp, hidden, dirs, gates, layout)
    gh = gates * hidden
    state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
    want = {1: ("W", (dirs, gh, inp)), 2: ("R", (dirs, gh, hidden)), 3: ("B", (dirs, 2 * gh)),
            4: ("sequence_lens", (batch,)), 5: ("initial_h", state)}
    if node.op == "LSTM":
        want.update({6: ("initial_c", state), 7: ("P", (dirs, 3 * hidden))})
    for k, (name, shape) in want.items():
        v = node.input(k)
        if v is None:
            continue
        if v.type.shape != shape:
            raise fail(node, f"{name} must have shape {list(shape)}, got {list(v.type.shape)}")
        if k == 4:
            if v.type.dtype not in (dt.I32, dt.I64):
                raise fail(node, f"sequence_lens must be int32, got {v.type.dtype}")
        elif v.type.dtype != x.type.dtype:
            raise fail(node, f"{name} has element type {v.type.dtype}, X has {x.type.dtype}")
    return d


def _activations(node: Node, dirs: int) -> list[tuple[Act, ...]]:
    """The activation functions of each direction, with their alpha and beta."""
    per_dir = len(_DEFAULT_ACTS[node.op])
    names = [str(n) for n in (node.attrs.get("activations") or _DEFAULT_ACTS[node.op] * dirs)]
    if node.op == "RNN" and dirs == 1 and len(names) == 2:
        names = names[:1]        # the schema's default lists Tanh twice; one direction uses one
    if dirs == 2 and len(names) == per_dir:
        names = names * 2
    if len(names) != per_dir * dirs:
        raise fail(node, f"activations must list {per_dir * dirs} functions, got {len(names)}")
    alphas = list(node.attrs.get("activation_alpha") or [])
    betas = list(node.attrs.get("activation_beta") or [])
    acts = []
    for name in names:
        key = name.lower()
        if key not in _ACTIVATIONS:
            raise unsupported(node, f"activation {name!r} is not supported")
        takes_a, takes_b, alpha, beta, _ = _ACTIVATIONS[key]
        if takes_a and alphas:
            alpha = float(alphas.pop(0))
        if takes_b and betas:
            beta = float(betas.pop(0))
        acts.append(Act(key, alpha, beta))
    return [tuple(acts[k * per_dir:(k + 1) * per_dir]) for k in range(dirs)]


@register_op("RNN", "GRU", "LSTM")
class Recurrent(OpDef):
    dtypes = dt.FLOATS

    def infer(self, node: Node) -> list[TensorType]:
        d = _dims(node)
        _activations(node, d.dirs)
        if node.op == "LSTM" and int(node.attrs.get("input_forget", 0)) not in (0, 1):
            raise fail(node, "input_forget must be 0 or 1")
        t = node.inputs[0].type.dtype
        y = ((d.seq, d.dirs, d.batch, d.hidden) if d.layout == 0
             else (d.batch, d.seq, d.dirs, d.hidden))
        state = (d.dirs, d.batch, d.hidden) if d.layout == 0 else (d.batch, d.dirs, d.hidden)
        shapes = [y, state, state][:len(node.outputs)]
        if len(node.outputs) > (3 if node.op == "LSTM" else 2):
            raise fail(node, "has too many outputs")
        return [TensorType(t, s) for s in shapes]

    def flops(self, node: Node) -> int:
        d = _dims(node)
        return 2 * d.dirs * d.seq * d.batch * d.gates * d.hidden * (d.inp + d.hidden)

    def lower(self, node: Node, ctx) -> None:
        _Emitter(node, ctx).emit()


class _Emitter:
    """Writes one recurrent node's kernel."""

    def __init__(self, node: Node, ctx) -> None:
        self.node, self.ctx, self.w = node, ctx, ctx.w
        self.d = _dims(node)
        self.acts = _activations(node, self.d.dirs)
        self.T = node.inputs[0].type.dtype.c
        self.A = "double" if node.inputs[0].type.dtype is dt.F64 else "float"
        self.ins = list(ctx.ins) + [None] * (8 - len(ctx.ins))
        self.clip = node.attrs.get("clip")
        self.lbr = node.op == "GRU" and int(node.attrs.get("linear_before_reset", 0)) == 1
        # GRU's default hidden gate multiplies r into h before R: its recurrent rows come later.
        d = self.d
        self.rec_rows = 2 * d.hidden if node.op == "GRU" and not self.lbr else d.gates * d.hidden

    # -- small helpers -----------------------------------------------------------------------

    def act(self, k: int, x: str) -> str:
        """Activation k of the current direction applied to variable x."""
        first = self.acts[0][k].expr(x, self.A)
        if len(self.acts) == 1 or self.acts[1][k] == self.acts[0][k]:
            return first
        return f"(d == 0 ? {first} : {self.acts[1][k].expr(x, self.A)})"

    def preact(self, name: str, expr: str) -> None:
        """`A name = expr;`, clipped to [-clip, clip] when the node clips."""
        self.w.line(f"{self.A} {name} = {expr};")
        if self.clip is not None:
            c = c_float(float(self.clip), self.A)
            self.w.line(f"{name} = {name} < -{c} ? -{c} : ({name} > {c} ? {c} : {name});")

    def gate(self, name: str, g: int, extra: str = "") -> None:
        """Pre-activation of gate g at unit k of row b: gx + gh (+ extra)."""
        gh = self.d.gates * self.d.hidden
        at = f"b * {gh} + {g * self.d.hidden} + k" if g else f"b * {gh} + k"
        self.preact(name, f"gx[{at}] + gh[{at}]{extra}")

    def dot(self, acc: str, vec: str, row: str, n: int) -> None:
        self.w.line(f"for (int64_t i = 0; i < {n}; ++i) {acc} += ({self.A}){vec}[i] * "
                    f"({self.A}){row}[i];")

    def active_rows(self) -> ContextManager[None]:
        return self.w.block(f"for (int64_t b = 0; b < {self.d.batch}; ++b) if (s < lens[b])")

    # -- the kernel --------------------------------------------------------------------------

    def emit(self) -> None:
        d, w, T, A = self.d, self.w, self.T, self.A
        gh = d.gates * d.hidden
        bh = d.batch * d.hidden
        n_acc = 2 * d.batch * gh + (bh if self.node.op == "GRU" else 0)
        n_state = bh * (2 if self.node.op == "LSTM" else 1)
        acc_size = 8 if A == "double" else 4
        itemsize = self.node.inputs[0].type.dtype.itemsize
        # At least one word, so the kernel gets a scratch pointer even for an empty batch.
        scratch = self.ctx.request_scratch(max(8, 8 * d.batch + acc_size * n_acc
                                               + itemsize * n_state))
        w.line(f"int64_t *lens = (int64_t *){scratch};")
        w.line(f"{A} *gx = ({A} *)(lens + {d.batch});")
        w.line(f"{A} *gh = gx + {d.batch * gh};")
        w.line(f"{A} *rh = gh + {d.batch * gh};")
        w.line(f"{T} *h = ({T} *)(rh + {bh if self.node.op == 'GRU' else 0});")
        w.line(f"{T} *c = h + {bh};")
        w.line("(void)rh; (void)c;")
        seq_lens = self.ins[4]
        with w.block(f"for (int64_t b = 0; b < {d.batch}; ++b)"):
            if seq_lens is None:
                w.line(f"lens[b] = {d.seq};")
            else:   # clamped so a bad length never reads outside X
                w.line(f"const int64_t n = (int64_t){seq_lens}[b];")
                w.line(f"lens[b] = n < 0 ? 0 : (n > {d.seq} ? {d.seq} : n);")
        direction = self.node.attrs.get("direction", "forward")
        rev = {"forward": "0", "reverse": "1", "bidirectional": "d == 1"}[direction]
        with w.block(f"for (int64_t d = 0; d < {d.dirs}; ++d)"):
            w.line(f"const int rev = {rev};")
            w.line("(void)rev;")
            self.init_state()
            with w.block(f"for (int64_t s = 0; s < {d.seq}; ++s)"):
                self.gemm()
                self.cell()
                with w.block(f"for (int64_t b = 0; b < {d.batch}; ++b) if (s >= lens[b])"):
                    for out in self.ctx.outs[:1]:   # Y past the row's length is zero
                        w.line(f"for (int64_t k = 0; k < {d.hidden}; ++k) "
                               f"{out}[{d.y_at('s', 'd', 'b')} + k] = 0;")
            self.final_state()

    def init_state(self) -> None:
        d, w = self.d, self.w
        states = [("h", self.ins[5])] + ([("c", self.ins[6])] if self.node.op == "LSTM" else [])
        with w.block(f"for (int64_t b = 0; b < {d.batch}; ++b)"):
            with w.block(f"for (int64_t k = 0; k < {d.hidden}; ++k)"):
                for name, init in states:
                    value = f"{init}[{d.state_at('d', 'b')} + k]" if init else "0"
                    w.line(f"{name}[b * {d.hidden} + k] = {value};")

    def final_state(self) -> None:
        d, w = self.d, self.w
        outs = list(zip(self.ctx.outs[1:], ["h", "c"]))
        if not outs:
            return
        with w.block(f"for (int64_t b = 0; b < {d.batch}; ++b)"):
            with w.block(f"for (int64_t k = 0; k < {d.hidden}; ++k)"):
                for out, name in outs:   # a row that never ran ends as zeros, as onnxruntime
                    w.line(f"{out}[{d.state_at('d', 'b')} + k] = lens[b] > 0 ? "
                           f"{name}[b * {d.hidden} + k] : 0;")

    def bias(self, at: str) -> str:
        """Initial accumulator: B[d, at] when the node has biases, else 0."""
        B = self.ins[3]
        return f"({self.A}){B}[d * {2 * self.d.gates * self.d.hidden} + {at}]" if B else "0"

    def recurrent_row(self, vec: str) -> None:
        """gh[b, j] = vec[b]·R[d, j] + Rb[d, j], with `rj` pointing at R[d, j]."""
        d, w, gh = self.d, self.w, self.d.gates * self.d.hidden
        w.line(f"{self.A} ah = {self.bias(f'{gh} + j')};")
        self.dot("ah", f"({vec} + b * {d.hidden})", "rj", d.hidden)
        w.line(f"gh[b * {gh} + j] = ah;")

    @contextlib.contextmanager
    def weight_rows(self, lo: int, hi: int) -> Iterator[None]:
        """Loop j over weight rows [lo, hi) with `wj`/`rj` pointing at W[d, j] and R[d, j]."""
        d, w, T, gh = self.d, self.w, self.T, self.d.gates * self.d.hidden
        with w.block(f"for (int64_t j = {lo}; j < {hi}; ++j)"):
            w.line(f"const {T} *wj = {self.ins[1]} + (d * {gh} + j) * {d.inp};")
            w.line(f"const {T} *rj = {self.ins[2]} + (d * {gh} + j) * {d.hidden};")
            w.line("(void)wj;")
            yield

    def gemm(self) -> None:
        """For every weight row j and running row b: gx = x·W[j] + Wb[j], and for the rows
        whose recurrent part needs only h, gh = h·R[j] + Rb[j]."""
        d, w, A, T = self.d, self.w, self.A, self.T
        gh = d.gates * d.hidden
        with self.weight_rows(0, gh):
            with self.active_rows():
                w.line("const int64_t t = rev ? lens[b] - 1 - s : s;")
                w.line(f"const {T} *x = {self.ins[0]} + {d.x_at('t', 'b')};")
                w.line(f"{A} ax = {self.bias('j')};")
                self.dot("ax", "x", "wj", d.inp)
                w.line(f"gx[b * {gh} + j] = ax;")
                if self.rec_rows == gh:
                    self.recurrent_row("h")
                else:
                    with w.block(f"if (j < {self.rec_rows})"):
                        self.recurrent_row("h")

    def cell(self) -> None:
        {"RNN": self.rnn_cell, "GRU": self.gru_cell, "LSTM": self.lstm_cell}[self.node.op]()

    @contextlib.contextmanager
    def unit_loop(self) -> Iterator[None]:
        """Every unit k of every running row b, with `t`, the Y offset `yo` and the state
        index `hk` declared."""
        d, w = self.d, self.w
        with self.active_rows():
            w.line("const int64_t t = rev ? lens[b] - 1 - s : s;")
            w.line(f"const int64_t yo = {d.y_at('t', 'd', 'b')};")
            w.line("(void)yo;")
            with w.block(f"for (int64_t k = 0; k < {d.hidden}; ++k)"):
                w.line(f"const int64_t hk = b * {d.hidden} + k;")
                yield

    def write_h(self, value: str) -> None:
        self.w.line(f"h[hk] = ({self.T})({value});")
        if self.ctx.outs:
            self.w.line(f"{self.ctx.outs[0]}[yo + k] = h[hk];")

    def rnn_cell(self) -> None:
        with self.unit_loop():
            self.gate("zi", 0)
            self.write_h(self.act(0, "zi"))

    def gru_cell(self) -> None:
        d, w, A = self.d, self.w, self.A
        H, gh = d.hidden, d.gates * d.hidden
        if not self.lbr:
            # rh = r ∘ h for every running row, then the hidden gate's recurrent rows over it.
            with self.active_rows():
                with w.block(f"for (int64_t k = 0; k < {H}; ++k)"):
                    w.line(f"const int64_t hk = b * {H} + k;")
                    self.gate("zr", 1)
                    w.line(f"rh[hk] = {self.act(0, 'zr')} * ({A})h[hk];")
            with self.weight_rows(2 * H, 3 * H):
                with self.active_rows():
                    self.recurrent_row("rh")
        with self.unit_loop():
            self.gate("zz", 0)
            w.line(f"const {A} z = {self.act(0, 'zz')};")
            if self.lbr:
                self.gate("zr", 1)
                w.line(f"const {A} r = {self.act(0, 'zr')};")
                at = f"b * {gh} + {2 * H} + k"
                self.preact("zh", f"gx[{at}] + r * gh[{at}]")
            else:
                self.gate("zh", 2)
            w.line(f"const {A} hh = {self.act(1, 'zh')};")
            self.write_h(f"(1 - z) * hh + z * ({A})h[hk]")

    def lstm_cell(self) -> None:
        d, w, A = self.d, self.w, self.A
        P = self.ins[7]

        def peep(g: int, cell: str) -> str:
            return f" + ({A}){P}[d * {3 * d.hidden} + {g * d.hidden} + k] * {cell}" if P else ""
        with self.unit_loop():
            w.line(f"const {A} cp = c[hk];")
            self.gate("zi", 0, peep(0, "cp"))
            w.line(f"const {A} ig = {self.act(0, 'zi')};")
            if int(self.node.attrs.get("input_forget", 0)):
                w.line(f"const {A} fg = 1 - ig;")
            else:
                self.gate("zf", 2, peep(2, "cp"))
                w.line(f"const {A} fg = {self.act(0, 'zf')};")
            self.gate("zc", 3)
            w.line(f"{A} cu = fg * cp + ig * {self.act(1, 'zc')};")
            clip = self.node.attrs.get("cell_clip")
            if isinstance(clip, CellClip):   # as TFLite's ClipVector: min, then max (NaN -> bound)
                c = c_float(clip.bound, A)
                w.line(f"cu = cu < {c} ? cu : {c};")
                w.line(f"cu = cu < -{c} ? -{c} : cu;")
            w.line(f"c[hk] = ({self.T})cu;")
            w.line(f"const {A} cn = c[hk];")
            self.gate("zo", 1, peep(1, "cn"))
            self.write_h(f"{self.act(0, 'zo')} * {self.act(2, 'cn')}")
