"""UNIDIRECTIONAL_SEQUENCE_LSTM (float) as one ONNX-semantics LSTM node (ops/rnn.py).

TFLite's operator reads 24 inputs: the sequence (0), input-to-{input, forget, cell, output}
weights (1-4, [cells, inputs]), recurrent-to-... weights (5-8, [cells, outputs]), peephole
cell-to-{input, forget, output} weights (9-11, [cells]), gate biases (12-15), projection
weights and bias (16-17), the output and cell state variables (18-19) and layer-norm
coefficients (20-23). Its step (lstm_eval.cc, LstmStepWithAuxInput) is ONNX's LSTM with
activations [Sigmoid, act, act] except in two places, which this module bridges:
- CIFG (no input gate): TFLite computes the forget gate f and uses 1 - f as the input gate;
  ONNX's input_forget computes the input gate and uses 1 - i as the forget gate. Since
  sigmoid(-z) = 1 - sigmoid(z), ONNX's input gate takes the negated forget-gate weights,
  biases and peephole: it is then 1 - f, and its complement is f.
- cell_clip clips the cell state after each update (ONNX's clip bounds the gates' inputs):
  the LSTM node carries it as a CellClip attribute.
The state variables start at zero on every run (Ember's models hold no state between calls),
as they do on a freshly allocated TFLite interpreter. Projection, layer normalization,
diagonal recurrent weights and int8 ("hybrid") weights are refused.
"""
from __future__ import annotations

import numpy as np

from ember.errors import ModelFormatError, UnsupportedError
from ember.frontend.tflite import OpContext
from ember.frontend.tflite_ops import converts
from ember.graph import dtypes as dt
from ember.ops.rnn import CellClip

_GATES = ("input", "forget", "cell", "output")     # TFLite's order in each input group
_ONNX_ORDER = (0, 3, 1, 2)                          # ONNX's i, o, f, c as TFLite gate indices
_INPUT_W, _RECURRENT_W, _PEEPHOLE, _BIAS = 1, 5, 9, 12
_PROJECTION, _STATES, _LAYER_NORM = (16, 17), (18, 19), (20, 21, 22, 23)

# fused activation -> ONNX activation of the cell gate and the output. With NONE the
# interpreter's output is o * (the cell gate's input), not o * c (ApplyActivationToVector
# writes nothing for NONE): refused rather than copied.
_ACTIVATIONS = {1: "Relu", 4: "Tanh"}
_ACT_NAMES = {0: "NONE", 2: "RELU_N1_TO_1", 3: "RELU6", 5: "SIGN_BIT"}


@converts("UNIDIRECTIONAL_SEQUENCE_LSTM")
def unidirectional_sequence_lstm(ctx: OpContext) -> None:
    ctx.arity(20, 24)
    options = ctx.options("UnidirectionalSequenceLSTMOptions")
    _refuse_unsupported(ctx, options)
    x = ctx.input(0)
    if x.type.rank != 3 or x.type.dtype != dt.F32:
        raise ctx.fail(f"input must be a 3-d float32 sequence, got {x.type}")
    time_major = bool(options["TimeMajor"])
    steps, batch, inputs = x.type.shape if time_major else (x.type.shape[1], x.type.shape[0],
                                                            x.type.shape[2])
    cifg = ctx.tensor(_INPUT_W) is None
    _check_presence(ctx, (_INPUT_W, _RECURRENT_W, _BIAS), [not cifg] * 3, "input gate",
                    "its input and recurrent weights and bias (inputs 1, 5, 12) go together")
    cells = _matrix(ctx, _INPUT_W + 1, "input-to-forget weights", inputs).shape[0]
    w = [None if cifg and g == 0 else
         _matrix(ctx, _INPUT_W + g, f"input-to-{_GATES[g]} weights", inputs, cells)
         for g in range(4)]
    r = [None if cifg and g == 0 else
         _matrix(ctx, _RECURRENT_W + g, f"recurrent-to-{_GATES[g]} weights", cells, cells)
         for g in range(4)]
    b = [None if cifg and g == 0 else _vector(ctx, _BIAS + g, f"{_GATES[g]} gate bias", cells)
         for g in range(4)]
    p = _peephole(ctx, cifg, cells)
    _check_states(ctx, batch, cells)
    if cifg:   # ONNX's input gate computes TFLite's 1 - forget gate: see the module docstring
        w[0], r[0], b[0] = -w[1], -r[1], -b[1]
        if p is not None:
            p[0] = -p[1]
    lstm_w = np.concatenate([w[g] for g in _ONNX_ORDER])[None]
    lstm_r = np.concatenate([r[g] for g in _ONNX_ORDER])[None]
    lstm_b = np.concatenate([*(b[g] for g in _ONNX_ORDER), np.zeros(4 * cells, np.float32)])[None]
    lstm_p = None if p is None else np.concatenate([p[0], p[3], p[1]])[None]   # ONNX: i, o, f
    act = _ACTIVATIONS[options["FusedActivationFunction"]]
    attrs = dict(hidden_size=cells, layout=0 if time_major else 1, input_forget=int(cifg),
                 activations=["Sigmoid", act, act])
    if options["CellClip"] > 0:
        attrs["cell_clip"] = CellClip(float(options["CellClip"]))
    f32 = lambda a: ctx.constant(a, dt.F32)     # noqa: E731
    y = ctx.emit("LSTM", [x, f32(lstm_w), f32(lstm_r), f32(lstm_b), None, None, None,
                          None if lstm_p is None else f32(lstm_p)], **attrs)
    # Y is [T, 1, B, H] (layout 0) or [B, T, 1, H] (layout 1): drop the direction axis.
    shape = [steps, batch, cells] if time_major else [batch, steps, cells]
    ctx.bind(ctx.emit("Reshape", [y, ctx.constant(np.array(shape, np.int64), dt.I64)]))


def _refuse_unsupported(ctx: OpContext, options: dict) -> None:
    code = options["FusedActivationFunction"]
    if code not in _ACTIVATIONS:
        raise UnsupportedError(f"LSTM activation {_ACT_NAMES.get(code, code)} is not supported "
                               "(RELU and TANH are)")
    if any(ctx.tensor(k) is not None for k in _PROJECTION):
        raise UnsupportedError("LSTM with a projection layer (inputs 16-17) is not supported")
    if any(ctx.tensor(k) is not None for k in _LAYER_NORM):
        raise UnsupportedError("layer-norm LSTM (coefficients in inputs 20-23) is not supported")
    if options.get("DiagonalRecurrentTensors"):
        raise UnsupportedError("LSTM with diagonal recurrent weights is not supported")
    t = ctx.tensor(_INPUT_W + 1)
    if t is not None and t.dtype is not None and t.dtype.kind != "f":
        raise UnsupportedError(f"LSTM with {t.type_name} weights on float activations (a hybrid "
                               "model) is not supported")


def _matrix(ctx: OpContext, k: int, what: str, cols: int, rows: int | None = None) -> np.ndarray:
    m = ctx.const(k, what)
    if m.dtype.kind != "f" or m.ndim != 2 or m.shape[1] != cols or (rows is not None
                                                                   and m.shape[0] != rows):
        want = f"[{rows if rows is not None else 'cells'}, {cols}]"
        raise ctx.fail(f"{what} (input {k}) must be float {want}, got {m.dtype}{list(m.shape)}")
    return m.astype(np.float32, copy=False)


def _vector(ctx: OpContext, k: int, what: str, size: int) -> np.ndarray:
    v = ctx.const(k, what)
    if v.dtype.kind != "f" or v.shape != (size,):
        raise ctx.fail(f"{what} (input {k}) must be float [{size}], got {v.dtype}{list(v.shape)}")
    return v.astype(np.float32, copy=False)


def _check_presence(ctx: OpContext, inputs: tuple[int, ...], want: list[bool], what: str,
                    rule: str) -> None:
    """Optional inputs must be given exactly as `want` says."""
    there = [ctx.tensor(k) is not None for k in inputs]
    if there != want:
        given = [k for k, t in zip(inputs, there) if t]
        raise ModelFormatError(f"{what}: inputs {given or 'none'} are given; {rule}")


def _peephole(ctx: OpContext, cifg: bool, cells: int) -> list[np.ndarray | None] | None:
    """The peephole weights by TFLite gate (i, f, -, o), or None without peephole."""
    inputs = tuple(_PEEPHOLE + g for g in range(3))
    if ctx.tensor(_PEEPHOLE + 2) is None:
        _check_presence(ctx, inputs, [False] * 3, "peephole weights",
                        "without cell-to-output weights (input 11) none may be")
        return None
    _check_presence(ctx, inputs, [not cifg, True, True], "peephole weights",
                    "with cell-to-output weights, cell-to-forget must be given, and "
                    "cell-to-input exactly when the input gate is")
    return [None if cifg else _vector(ctx, _PEEPHOLE, "cell-to-input weights", cells),
            _vector(ctx, _PEEPHOLE + 1, "cell-to-forget weights", cells), None,
            _vector(ctx, _PEEPHOLE + 2, "cell-to-output weights", cells)]


def _check_states(ctx: OpContext, batch: int, cells: int) -> None:
    """The output and cell state inputs: variables of [batch, cells], which start at zero."""
    for k, what in zip(_STATES, ("output state", "cell state")):
        t = ctx.tensor(k)
        if t is None or not t.is_variable:
            raise ModelFormatError(f"{what} (input {k}) must be a variable tensor")
        if t.shape != (batch, cells):
            raise ctx.fail(f"{what} (input {k}) must have shape [{batch}, {cells}], got "
                           f"{list(t.shape)}")
        if t.data is not None and np.any(t.data):
            raise UnsupportedError(f"{what} (input {k}) with nonzero initial values is not "
                                   "supported")
