"""The pass pipeline: one ordered list of named passes, read top to bottom.

Order, and why:
  0. fuse-qdq                         QDQ groups into integer ops (QLinearConv, QLinearMatMul ...)
                                      first: it reads the integers behind constants folded from
                                      DequantizeLinear, which CSE and pack-weights would rewrite.
  0a. fuse-gelu                       written-out Gelu (Div, Erf, Add, Mul, Mul) into one Gelu,
                                      before any fusion takes the pattern apart.
  0b. div-to-mul                      division by a float constant into multiplication by its
                                      reciprocal: after fuse-gelu, whose pattern holds a Div.
  1. eliminate-common-subexpressions  dedupe constants and repeated nodes first, so every later
                                      pass sees one value where the model computed it twice.
  2. cancel-transposes                Transpose pairs that undo each other (NHWC models imported
                                      as NCHW layers) go, after CSE merged the repeated ones and
                                      before fusion, which would hide the ops between them.
  3. fold-batchnorm                   BN into Conv/ConvTranspose/Gemm/MatMul weights (else Mul+Add),
                                      before fusion, which would otherwise hide the Conv->BN pair.
  3a. fuse-expand-depthwise           a 1x1 conv expanding into a large map, with its Relu/Clip,
                                      into the 3x3 depthwise conv reading it: after fold-batchnorm
                                      and before choose-layout (which moves the fused node into a
                                      blocked region) and fuse-epilogues (the depthwise's own
                                      activation fuses as a Conv's). Host only, as
                                      choose-layout.
  3b. choose-layout                   small-map conv regions channels-last (1x1 convs become
                                      MatMuls), large-map ones blocked NCHWc where it pays, after
                                      fold-batchnorm (the weights are final) and before
                                      fuse-epilogues (which fuses into those MatMuls and convs).
                                      Host only: `ember export` keeps NCHW (a microcontroller's
                                      RAM would hold the boundary transposes' copies).
  4. pack-weights                     constant weights into the layout their kernel reads (after
                                      fold-batchnorm, which rewrites them).
  5. fold-constants                   catch nodes the rewrites above left with constant inputs
                                      (the importer already folded everything it could).
  6. eliminate-dead                   drop what the folds orphaned, before fusion counts readers.
  7. fuse-epilogues                   bias, activation and residual ops into Conv/Gemm/MatMul
                                      kernels first: a kernel's epilogue beats a separate loop.
  8. fold-transposes                  a Transpose read only by MatMul/Gemm becomes their strided
                                      read: after eliminate-dead, so its readers are final (no
                                      fusion crosses a Transpose, so fusing first is the same).
  9. fuse-elementwise                 the elementwise chains still left become single loops.

opt_level 0 runs only eliminate-dead; 1 adds fuse-qdq and the cleanups (1, 2, 5); 2 and 3 run
everything.
`ember inspect --after NAME` stops after the pass NAME: run_pipeline(stop_after=NAME).
"""
from __future__ import annotations

from ember.errors import EmberError
from ember.graph.ir import Graph
from ember.graph.verify import verify
from ember.passes.base import Pass
from ember.passes.cancel_transposes import CancelTransposes
from ember.passes.choose_layout import ChooseLayout
from ember.passes.div_to_mul import DivToMul
from ember.passes.eliminate_common_subexpressions import EliminateCommonSubexpressions
from ember.passes.eliminate_dead import EliminateDead
from ember.passes.fold_batchnorm import FoldBatchNorm
from ember.passes.fold_constants import FoldConstants
from ember.passes.fold_transposes import FoldTransposes
from ember.passes.fuse_elementwise import FuseElementwise
from ember.passes.fuse_epilogues import FuseEpilogues
from ember.passes.fuse_expand_depthwise import FuseExpandDepthwise
from ember.passes.fuse_gelu import FuseGelu
from ember.passes.fuse_qdq import FuseQdq
from ember.passes.pack_weights import PackWeights


def default_pipeline(opt_level: int = 3, channels_last: bool = True) -> list[Pass]:
    if opt_level <= 0:
        return [EliminateDead()]
    if opt_level == 1:
        return [FuseQdq(), EliminateCommonSubexpressions(), CancelTransposes(), FoldConstants(),
                EliminateDead()]
    return [
        FuseQdq(),
        FuseGelu(),
        DivToMul(),
        EliminateCommonSubexpressions(),
        CancelTransposes(),
        FoldBatchNorm(),
        *([FuseExpandDepthwise(), ChooseLayout()] if channels_last else []),
        PackWeights(),
        FoldConstants(),
        EliminateDead(),
        FuseEpilogues(),
        FoldTransposes(),
        FuseElementwise(),
    ]


def pass_names(opt_level: int = 3) -> list[str]:
    return [p.name for p in default_pipeline(opt_level)]


def run_pipeline(graph: Graph, opt_level: int = 3, stop_after: str | None = None,
                 check: bool = False, channels_last: bool = True) -> Graph:
    """Run the pipeline; `stop_after` names the last pass to run; `check` verifies after each;
    `channels_last` runs choose-layout (host code; not `ember export`)."""
    passes = default_pipeline(opt_level, channels_last)
    if stop_after is not None and stop_after not in {p.name for p in passes}:
        raise EmberError(f"unknown pass {stop_after!r}; passes: {', '.join(p.name for p in passes)}")
    for p in passes:
        graph = p.run(graph)
        if check:
            verify(graph, after=p.name)
        if p.name == stop_after:
            break
    return graph
