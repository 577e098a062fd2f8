"""TFLite's float UNIDIRECTIONAL_SEQUENCE_LSTM: TFLite Micro's trained MNIST LSTM against its
reference output, one-operator models against the TFLite interpreter (reference kernels) in
every layout and variant Ember supports, and the variants it refuses."""
from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.errors import ModelFormatError, UnsupportedError
from test_tflite import DATA, check, compare_with_reference, rand, shared
from tflite_builder import TflBuilder


def lstm_model(batch: int, steps: int, inputs: int, cells: int, time_major: bool = False,
               cifg: bool = False, peephole: bool = False, projection: bool = False,
               layer_norm: bool = False, omit: tuple[int, ...] = (), **options) -> bytes:
    """One UNIDIRECTIONAL_SEQUENCE_LSTM with random weights; its 24 inputs in TFLite's order."""
    m = TflBuilder()
    x = m.tensor([steps, batch, inputs] if time_major else [batch, steps, inputs])
    seeds = iter(range(1, 100))

    def const(*shape: int) -> int:
        return m.tensor(data=rand(*shape, seed=next(seeds)) * 0.4)
    outputs = cells // 2 if projection else cells
    gated = lambda make, g: -1 if cifg and g == 0 else make()    # noqa: E731 (CIFG: no input gate)
    ins = [x]
    ins += [gated(lambda: const(cells, inputs), g) for g in range(4)]
    ins += [gated(lambda: const(cells, outputs), g) for g in range(4)]
    ins += [gated(lambda: const(cells), g) if peephole else -1 for g in range(3)]
    ins += [gated(lambda: const(cells), g) for g in range(4)]
    ins += [const(outputs, cells), const(outputs)] if projection else [-1, -1]
    ins += [m.tensor([batch, outputs], variable=True), m.tensor([batch, cells], variable=True)]
    ins += [const(cells) for _ in range(4)] if layer_norm else [-1] * 4
    ins = [-1 if k in omit else t for k, t in enumerate(ins)]
    y = m.tensor([steps, batch, outputs] if time_major else [batch, steps, outputs])
    m.op("UNIDIRECTIONAL_SEQUENCE_LSTM", ins, [y], "UnidirectionalSequenceLSTMOptions",
         TimeMajor=time_major, **{"FusedActivationFunction": 4, **options})
    return m.finish([x], [y])


def sequence(batch: int, steps: int, inputs: int, time_major: bool = False,
             scale: float = 1.0) -> np.ndarray:
    shape = (steps, batch, inputs) if time_major else (batch, steps, inputs)
    return rand(*shape, seed=50) * scale


def test_trained_mnist_lstm():
    # cell_clip 10, tanh, batch-major [1, 28, 28]; RESHAPE, FULLY_CONNECTED and SOFTMAX follow.
    compare_with_reference(DATA / "trained_lstm.tflite", DATA)


@pytest.mark.parametrize("batch, steps, time_major", [
    (1, 5, False), (2, 7, False), (2, 6, True), (3, 1, True), (1, 4, True)])
def test_layouts_and_batches(batch, steps, time_major):
    data = lstm_model(batch, steps, 5, 6, time_major=time_major)
    check(data, [sequence(batch, steps, 5, time_major)])


@pytest.mark.parametrize("time_major", [False, True])
def test_cell_clip(time_major):
    # Large inputs drive the cell state past the bound within a few steps.
    data = lstm_model(2, 6, 4, 5, time_major=time_major, CellClip=0.3)
    x = sequence(2, 6, 4, time_major, scale=6.0)
    unclipped = ember.compile(lstm_model(2, 6, 4, 5, time_major=time_major))(x)
    clipped = ember.compile(data)(x)
    assert np.abs(clipped - unclipped).max() > 1e-2         # the clip changes the result
    check(data, [x])


@pytest.mark.parametrize("cifg, peephole, clip", [
    (False, True, 0.0), (True, False, 0.0), (True, True, 0.0), (False, True, 0.5),
    (True, True, 0.5)])
def test_peephole_and_cifg(cifg, peephole, clip):
    data = lstm_model(2, 5, 3, 4, cifg=cifg, peephole=peephole, CellClip=clip)
    check(data, [sequence(2, 5, 3, scale=3.0)])


def test_relu_activation():
    data = lstm_model(2, 4, 3, 4, FusedActivationFunction=1)
    check(data, [sequence(2, 4, 3)])


def test_state_starts_at_zero_on_every_run():
    model = ember.compile(lstm_model(1, 3, 2, 3))
    x = sequence(1, 3, 2)
    first = model(x)
    np.testing.assert_array_equal(model(x), first)
    check(lstm_model(1, 3, 2, 3), [x], want=[first])


@pytest.mark.parametrize("variant, message", [
    ({"projection": True}, "LSTM with a projection layer (inputs 16-17) is not supported"),
    ({"layer_norm": True}, "layer-norm LSTM (coefficients in inputs 20-23) is not supported"),
    ({"FusedActivationFunction": 3}, "LSTM activation RELU6 is not supported (RELU and TANH "
                                     "are)"),
    ({"FusedActivationFunction": 0}, "LSTM activation NONE is not supported (RELU and TANH are)"),
    ({"DiagonalRecurrentTensors": True}, "LSTM with diagonal recurrent weights is not supported")])
def test_refused_variants(variant, message):
    with pytest.raises(UnsupportedError) as info:
        ember.compile(lstm_model(1, 3, 4, 4, **variant))
    assert info.value.problems == [f"operator 0 (UNIDIRECTIONAL_SEQUENCE_LSTM): {message}"]


@pytest.mark.parametrize("omit, peephole, message", [
    ((1,), False, r"input gate: inputs \[5, 12\] are given; its input and recurrent weights and "
                  r"bias \(inputs 1, 5, 12\) go together"),
    ((10,), True, r"peephole weights: inputs \[9, 11\] are given; with cell-to-output weights, "
                  "cell-to-forget must be given"),
    ((19,), False, r"cell state \(input 19\) must be a variable tensor")])
def test_malformed_inputs(omit, peephole, message):
    with pytest.raises(ModelFormatError, match=message):
        ember.compile(lstm_model(1, 3, 4, 4, peephole=peephole, omit=omit))


@pytest.mark.parametrize("path", ["tflite_micro/trained_lstm_int8.tflite",
                                  "tflite_micro/micro_speech_lstm.tflite"])
def test_int8_lstm_refused(path):
    with pytest.raises(UnsupportedError) as info:
        ember.compile(str(shared(path)))
    assert "operator 0 (UNIDIRECTIONAL_SEQUENCE_LSTM): op is not supported on quantized " \
           "tensors" in info.value.problems
