"""The pass pipeline: names, stop_after, and whole models through every pass with checks."""
import dataclasses
import re

import numpy as np
import pytest
from onnx import helper

from pass_helpers import check_types, golden, graph_of, needs_ops
from ember.errors import EmberError
from ember.frontend.onnx import import_onnx
from ember.graph.printer import print_graph
from ember.passes.pipeline import default_pipeline, pass_names, run_pipeline
from ember.zoo import ZOO

N = helper.make_node


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_passes_are_named_frozen_dataclasses(level):
    names = pass_names(level)
    assert len(set(names)) == len(names)
    for p in default_pipeline(level):
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", p.name)
        assert dataclasses.is_dataclass(p) and p.__dataclass_params__.frozen


def conv_bn_relu_residual(rng):
    needs_ops("Conv", "BatchNormalization")
    c = 4
    nodes = [N("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
             N("BatchNormalization", ["h", "s", "b", "m", "v"], ["bn"]),
             N("Relu", ["bn"], ["r"]), N("Add", ["r", "x"], ["out"])]
    inits = {"w": rng.standard_normal((c, c, 3, 3)).astype(np.float32),
             "s": np.ones(c, np.float32), "b": np.zeros(c, np.float32),
             "m": np.zeros(c, np.float32), "v": np.ones(c, np.float32)}
    return graph_of(nodes, {"x": (1, c, 5, 5)}, ["out"], inits)


def test_stop_after(rng):
    graph = run_pipeline(conv_bn_relu_residual(rng), stop_after="fold-batchnorm", check=True)
    assert print_graph(graph) == golden("""
        graph(%0: f32[1,4,5,5]) {
          %1 = Conv(%0, const f32[4,4,3,3], const f32[4]) {auto_pad='NOTSET', group=1, pads=[1, 1, 1, 1]} : f32[1,4,5,5]
          %2 = Relu(%1) : f32[1,4,5,5]
          %3 = Add(%2, %0) : f32[1,4,5,5]
          return %3
        }
        """)
    graph = run_pipeline(conv_bn_relu_residual(rng), check=True)
    assert print_graph(graph) == golden("""
        graph(%0: f32[1,4,5,5]) {
          %1 = Conv(%0, const f32[4,4,3,3], const f32[4], %0) {auto_pad='NOTSET', epilogue={s0=Relu(x0); s1=Add(s0,x1)}, group=1, pads=[1, 1, 1, 1]} : f32[1,4,5,5]
          return %1
        }
        """)


def test_unknown_pass_is_an_error(rng):
    graph = graph_of([N("Relu", ["x"], ["y"])], {"x": (2,)}, ["y"])
    with pytest.raises(EmberError, match="unknown pass 'fuse-everything'"):
        run_pipeline(graph, stop_after="fuse-everything")
    with pytest.raises(EmberError, match="unknown pass 'fuse-elementwise'"):
        run_pipeline(graph, opt_level=0, stop_after="fuse-elementwise")


@pytest.mark.parametrize("name", ["resnet8", "mobilenetv3_block", "efficientnet_block",
                                  "bert_tiny", "inception_block", "densenet_block"])
def test_zoo_models_stay_valid(name):
    """Every pass on a whole model: verify() after each, every type still infers, and a
    second run finds nothing left to do."""
    graph = run_pipeline(import_onnx(ZOO[name]()), check=True)
    check_types(graph)
    once = print_graph(graph)
    assert print_graph(run_pipeline(graph, check=True)) == once
