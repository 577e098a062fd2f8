"""Ember's own model zoo: ONNX models built in code with seeded random weights.

No downloads and no torch: every model is written with onnx.helper through `GraphBuilder`,
so tests, the demo and benchmarks have real architectures to compile anywhere.

    from ember.zoo import ZOO, random_inputs
    model = ZOO["resnet18"]()                 # onnx.ModelProto, opset 17
    feeds = random_inputs(model, seed=0)      # {input name: array}
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import onnx
from onnx import helper

from ember.zoo.blocks import (densenet_block, efficientnet_block, inception_block,
                              shufflenet_unit, squeezenet_fire, vgg_block)
from ember.zoo.builder import GraphBuilder
from ember.zoo.transformer import bert_encoder
from ember.zoo.vision import ds_cnn, mlp, mobilenet_v2, resnet8, resnet18, small_cnn

ZOO: dict[str, Callable[[], onnx.ModelProto]] = {
    "small_cnn": small_cnn,
    "mlp": mlp,
    "resnet8": resnet8,
    "ds_cnn": ds_cnn,
    "resnet18": resnet18,
    "mobilenet_v2": mobilenet_v2,
    "bert_encoder": bert_encoder,
    "bert_tiny": partial(bert_encoder, layers=2, hidden=128, heads=2, ffn=512, seq=32,
                         vocab=1000),
    "efficientnet_block": efficientnet_block,
    "mobilenetv3_block": partial(efficientnet_block, act="hardswish"),
    "squeezenet_fire": squeezenet_fire,
    "shufflenet_unit": shufflenet_unit,
    "inception_block": inception_block,
    "densenet_block": densenet_block,
    "vgg_block": vgg_block,
}

#: integer inputs without a recorded range are drawn from [0, DEFAULT_INT_HIGH)
DEFAULT_INT_HIGH = 10


def input_ranges(model: onnx.ModelProto) -> dict[str, tuple[int, int]]:
    """[low, high) ranges the builder recorded for integer inputs (token ids, masks)."""
    prefix = "ember.zoo.range."
    ranges = {}
    for prop in model.metadata_props:
        if prop.key.startswith(prefix):
            low, high = prop.value.split(",")
            ranges[prop.key[len(prefix):]] = (int(low), int(high))
    return ranges


def random_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """A feed for every graph input: standard normal floats; integers within recorded ranges."""
    rng = np.random.default_rng(seed)
    ranges = input_ranges(model)
    constants = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in constants:
            continue
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value for d in tt.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        if dtype.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            low, high = ranges.get(vi.name, (0, DEFAULT_INT_HIGH))
            feeds[vi.name] = rng.integers(low, high, shape).astype(dtype)
    return feeds


__all__ = ["ZOO", "GraphBuilder", "random_inputs", "input_ranges", "small_cnn", "resnet18",
           "mobilenet_v2", "bert_encoder", "resnet8", "ds_cnn", "mlp", "efficientnet_block",
           "squeezenet_fire", "shufflenet_unit", "inception_block", "densenet_block",
           "vgg_block"]
