"""RNN, GRU and LSTM against onnxruntime (fp32) and the ONNX reference evaluator (fp64, fp16)."""
import numpy as np
import onnx
import pytest
from onnx import helper

import ember
from conftest import check_model, check_node, make_model, run_ort
from ember.errors import ShapeError, UnsupportedError

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
OPS = list(GATES)
DIRECTIONS = ["forward", "reverse", "bidirectional"]


def rnn_inputs(op, rng, seq=4, batch=3, inp=5, hidden=6, direction="forward", layout=0,
               bias=True, lens=None, initial=False, peepholes=False, dtype=np.float32,
               const_weights=True):
    """(graph inputs, initializers, node input names with "" for omitted ones)."""
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]

    def rand(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)
    x = rand(seq, batch, inp) if layout == 0 else rand(batch, seq, inp)
    state = (d, batch, hidden) if layout == 0 else (batch, d, hidden)
    slots = {"X": x, "W": rand(d, g * hidden, inp, scale=0.5),
             "R": rand(d, g * hidden, hidden, scale=0.5),
             "B": rand(d, 2 * g * hidden) if bias else None,
             "sl": None if lens is None else np.array(lens, np.int32),
             "h0": rand(*state) if initial else None}
    if op == "LSTM":
        slots["c0"] = rand(*state) if initial else None
        slots["P"] = rand(d, 3 * hidden) if peepholes else None
    weights = {"W", "R", "B", "P"} if const_weights else set()
    inputs = {k: v for k, v in slots.items() if v is not None and k not in weights}
    inits = {k: v for k, v in slots.items() if v is not None and k in weights}
    names = [k if v is not None else "" for k, v in slots.items()]
    while names[-1] == "":
        names.pop()
    return inputs, inits, names


def n_outputs(op):
    return 3 if op == "LSTM" else 2


def check_rnn(op, rng, attrs=None, opset=17, **kw):
    inputs, inits, names = rnn_inputs(op, rng, **kw)
    hidden = kw.get("hidden", 6)
    attrs = {"hidden_size": hidden, "direction": kw.get("direction", "forward"), **(attrs or {})}
    if kw.get("layout", 0):
        attrs["layout"] = 1
    oracle = "ort" if kw.get("dtype", np.float32) == np.float32 else "reference"
    tol = {"rtol": 2e-2, "atol": 2e-2} if kw.get("dtype") == np.float16 else {}
    return check_node(op, inputs, attrs, n_outputs(op), inits, opset=opset, input_names=names,
                      oracle=oracle, **tol)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("bias", [True, False])
def test_directions(op, direction, bias, rng):
    check_rnn(op, rng, direction=direction, bias=bias, initial=bias)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_sequence_lens(op, direction, rng):
    # Rows of full, zero and partial length: Y is zero past each row's end and Y_h/Y_c hold the
    # last step that ran (zeros for the empty row).
    check_rnn(op, rng, seq=5, batch=4, direction=direction, lens=[5, 0, 2, 1], initial=True,
              peepholes=True)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_layout_batch_first(op, direction, rng):
    # onnxruntime lacks layout=1: compare with its layout=0 run on the transposed tensors.
    inputs, inits, names = rnn_inputs(op, rng, direction=direction, layout=1, lens=[4, 1, 3],
                                      initial=True)
    outs = [f"y{k}" for k in range(n_outputs(op))]
    node = helper.make_node(op, names, outs, hidden_size=6, direction=direction, layout=1)
    compiled = ember.compile(make_model([node], inputs, outs, inits, opset=14))
    got = compiled.run(inputs)
    seq_first = {k: (v.swapaxes(0, 1) if v.ndim == 3 else v) for k, v in inputs.items()}
    node0 = helper.make_node(op, names, outs, hidden_size=6, direction=direction)
    want = run_ort(make_model([node0], seq_first, outs, inits, opset=14), seq_first)
    np.testing.assert_allclose(got["y0"], want[0].transpose(2, 0, 1, 3), rtol=1e-4, atol=1e-5)
    for k in range(1, len(outs)):
        np.testing.assert_allclose(got[f"y{k}"], want[k].swapaxes(0, 1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", OPS)
def test_layout_batch_first_reference(op, rng):
    check_rnn(op, rng, direction="bidirectional", layout=1, initial=True, peepholes=True,
              dtype=np.float64, opset=14)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("seq,batch,inp,hidden", [(1, 1, 1, 1), (7, 3, 2, 5), (1, 3, 4, 1)])
def test_odd_sizes(op, seq, batch, inp, hidden, rng):
    check_rnn(op, rng, seq=seq, batch=batch, inp=inp, hidden=hidden, direction="bidirectional",
              initial=True)


@pytest.mark.parametrize("sizes", [{"seq": 0}, {"batch": 0}, {"inp": 0}])
def test_empty_rnn(sizes, rng):
    check_rnn("RNN", rng, direction="bidirectional", initial=True, **sizes)


# onnxruntime aborts on empty GRU inputs and returns uninitialized memory for empty LSTM ones:
# there the reference evaluator (fp64) or the known answer serves.
@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_empty_input_size(op, rng):
    check_rnn(op, rng, direction="bidirectional", initial=True, inp=0, dtype=np.float64)


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_empty_sequence(op, rng):
    # No step runs: Y is empty and Y_h/Y_c zero (onnxruntime's rule for a row of length 0).
    inputs, inits, names = rnn_inputs(op, rng, seq=0, initial=True)
    outs = ["y", "yh", "yc"][:n_outputs(op)]
    node = helper.make_node(op, names, outs, hidden_size=6)
    got = ember.compile(make_model([node], inputs, outs, inits)).run(inputs)
    assert got["y"].shape == (0, 1, 3, 6)
    for name in outs[1:]:
        np.testing.assert_array_equal(got[name], np.zeros((1, 3, 6), np.float32))


@pytest.mark.parametrize("op", OPS)
def test_runtime_weights(op, rng):
    check_rnn(op, rng, direction="bidirectional", initial=True, peepholes=True,
              const_weights=False, lens=[2, 4, 3])


@pytest.mark.parametrize("op", OPS)
def test_clip(op, rng):
    check_rnn(op, rng, {"clip": 0.3}, direction="bidirectional", initial=True, peepholes=True)


# (activations, alpha, beta) for one direction of RNN.
RNN_ACTIVATIONS = [
    (["Relu"], None, None), (["Affine"], [0.7], [0.2]),
    (["LeakyRelu"], [0.2], None), (["LeakyRelu"], None, None), (["ThresholdedRelu"], [0.3], None),
    (["ScaledTanh"], [1.5], [0.5]), (["HardSigmoid"], [0.3], [0.4]), (["HardSigmoid"], None, None),
    (["Elu"], [0.6], None), (["Softsign"], None, None), (["Softplus"], None, None),
]


@pytest.mark.parametrize("acts,alpha,beta", RNN_ACTIVATIONS)
def test_rnn_activations(acts, alpha, beta, rng):
    attrs = {"activations": acts}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    check_rnn("RNN", rng, attrs, hidden=4, initial=True)


@pytest.mark.parametrize("op,acts,alpha,beta", [
    # alpha/beta go, in order, only to the functions that take them.
    ("GRU", ["HardSigmoid", "Softsign", "Sigmoid", "ScaledTanh"], [0.25, 0.8], [0.45, 1.2]),
    ("LSTM", ["HardSigmoid", "Elu", "Softsign", "Sigmoid", "Tanh", "LeakyRelu"],
     [0.3, 0.9, 0.05], [0.6]),
    ("RNN", ["Relu", "Affine"], [0.5], [0.1]),
])
def test_activations_per_direction(op, acts, alpha, beta, rng):
    attrs = {"activations": acts, "activation_alpha": alpha, "activation_beta": beta}
    check_rnn(op, rng, attrs, direction="bidirectional", initial=True, lens=[4, 2, 3])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_gru_linear_before_reset(direction, rng):
    check_rnn("GRU", rng, {"linear_before_reset": 1}, direction=direction, initial=True,
              lens=[3, 4, 0])


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("input_forget", [0, 1])
def test_lstm_peepholes(direction, input_forget, rng):
    check_rnn("LSTM", rng, {"input_forget": input_forget}, direction=direction, initial=True,
              peepholes=True)


@pytest.mark.parametrize("op,outputs", [("LSTM", ["y"]), ("LSTM", ["", "yh"]),
                                        ("LSTM", ["", "", "yc"]), ("LSTM", ["y", "", "yc"]),
                                        ("GRU", ["", "yh"]), ("RNN", ["y"])])
def test_output_subsets(op, outputs, rng):
    inputs, inits, names = rnn_inputs(op, rng, initial=True, lens=[4, 2, 3])
    node = helper.make_node(op, names, outputs, hidden_size=6)
    model = make_model([node], inputs, [o for o in outputs if o], inits)
    check_model(model, inputs)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_float64(op, direction, rng):
    # onnxruntime has fp32 kernels only; the reference evaluator ignores sequence_lens.
    check_rnn(op, rng, direction=direction, initial=True, peepholes=True, dtype=np.float64)


@pytest.mark.parametrize("op", OPS)
def test_float16(op, rng):
    # Ember computes in float and rounds the state to fp16 each step, as the reference does
    # with numpy; the two differ in rounding of the sums, hence the fp16-sized tolerance.
    check_rnn(op, rng, hidden=3, initial=True, dtype=np.float16)


@pytest.mark.parametrize("op", OPS)
def test_bad_sequence_lens_are_clamped(op, rng):
    # onnxruntime rejects lengths outside [0, seq_length]; Ember clamps them instead, so it
    # never reads outside X. The result equals the clamped lengths'.
    inputs, inits, names = rnn_inputs(op, rng, seq=4, batch=3, lens=[9, -3, 2], initial=True)
    node = helper.make_node(op, names, [f"y{k}" for k in range(n_outputs(op))], hidden_size=6)
    outs = [f"y{k}" for k in range(n_outputs(op))]
    compiled = ember.compile(make_model([node], inputs, outs, inits))
    got = compiled.run(inputs)
    clamped = dict(inputs, sl=np.array([4, 0, 2], np.int32))
    want = check_model(make_model([node], clamped, outs, inits), clamped)
    for info, expected in zip(compiled.outputs, want):
        np.testing.assert_allclose(got[info.name], expected, rtol=1e-4, atol=1e-5)


def _model(op, rng, attrs, **kw):
    inputs, inits, names = rnn_inputs(op, rng, **kw)
    node = helper.make_node(op, names, ["y"], **attrs)
    return make_model([node], inputs, ["y"], inits)


@pytest.mark.parametrize("attrs,error,match", [
    ({"hidden_size": 5}, ShapeError, "hidden_size"),
    ({"activations": ["Tanh", "Tanh", "Tanh"]}, ShapeError, "activations"),
    ({"activations": ["Swish"]}, UnsupportedError, "Swish"),
    ({"direction": "sideways"}, ShapeError, "direction"),
])
def test_invalid(attrs, error, match, rng):
    with pytest.raises(error, match=match):
        ember.compile(_model("RNN", rng, attrs))


def test_wrong_weight_shape(rng):
    model = _model("LSTM", rng, {"hidden_size": 6})
    w = next(i for i in model.graph.initializer if i.name == "W")
    w.CopyFrom(onnx.numpy_helper.from_array(rng.standard_normal((1, 20, 5)).astype(np.float32),
                                            "W"))
    with pytest.raises(ShapeError, match="W must have shape"):
        ember.compile(model)
