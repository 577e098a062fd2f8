"""Representative blocks of other architecture families, so their op patterns are covered.

Each is a small model (one or two blocks of the paper's design on a modest feature map),
not the whole network: what matters is the op mix and how tensors flow between branches.
"""
from __future__ import annotations

import onnx

from ember.zoo.builder import GraphBuilder


def _activation(g: GraphBuilder, x: str, kind: str) -> str:
    return g.swish(x) if kind == "swish" else g.unary("HardSwish", x)


def _gate(g: GraphBuilder, x: str, kind: str) -> str:
    return g.sigmoid(x) if kind == "swish" else g.unary("HardSigmoid", x, alpha=1 / 6, beta=0.5)


def efficientnet_block(act: str = "swish", seed: int = 0) -> onnx.ModelProto:
    """MBConv6 3x3 with squeeze-and-excite and residual (EfficientNet-B0 stage 3 shape).

    act="swish": x*Sigmoid(x) activations and a Sigmoid gate (EfficientNet);
    act="hardswish": HardSwish activations and a HardSigmoid gate (MobileNetV3).
    """
    g = GraphBuilder(f"mbconv_{act}", seed)
    x = g.input("input", (1, 24, 28, 28))
    y = _activation(g, g.bn(g.conv(x, 144, 1, pad=0, bias=False)), act)
    y = _activation(g, g.bn(g.depthwise(y, 3, bias=False)), act)
    s = g.global_avg_pool(y)                                    # squeeze
    s = _activation(g, g.conv(s, 6, 1, pad=0), act)
    s = _gate(g, g.conv(s, 144, 1, pad=0, gain=1.0), act)       # excite
    y = g.mul(y, s)
    y = g.bn(g.conv(y, 24, 1, pad=0, bias=False), gamma=(0.3, 0.6))
    return g.build([g.add(y, x)], doc=efficientnet_block.__doc__)


def _fire(g: GraphBuilder, x: str, squeeze: int, expand: int) -> str:
    s = g.relu(g.conv(x, squeeze, 1, pad=0))
    return g.concat([g.relu(g.conv(s, expand, 1, pad=0)), g.relu(g.conv(s, expand, 3))])


def squeezenet_fire(seed: int = 0) -> onnx.ModelProto:
    """SqueezeNet 1.0 fire2-fire3 then its ceil-mode 3x3/2 MaxPool (Iandola et al. 2016)."""
    g = GraphBuilder("squeezenet_fire", seed)
    x = g.input("input", (1, 96, 27, 27))
    x = _fire(g, _fire(g, x, 16, 64), 16, 64)
    return g.build([g.maxpool(x, 3, 2, ceil=True)], doc=squeezenet_fire.__doc__)


def _channel_shuffle(g: GraphBuilder, x: str, groups: int) -> str:
    n, c, h, w = g.shape(x)
    y = g.transpose(g.reshape(x, (n, groups, c // groups, h, w)), (0, 2, 1, 3, 4))
    return g.reshape(y, (n, c, h, w))


def _shuffle_branch(g: GraphBuilder, x: str, cout: int, stride: int) -> str:
    y = g.relu(g.bn(g.conv(x, cout, 1, pad=0, bias=False)))
    y = g.bn(g.depthwise(y, 3, stride, bias=False))
    return g.relu(g.bn(g.conv(y, cout, 1, pad=0, bias=False)))


def shufflenet_unit(seed: int = 0) -> onnx.ModelProto:
    """ShuffleNetV2 (Ma et al. 2018): a stride-2 unit, then a stride-1 unit with channel Split.

    Both end with Concat and a channel shuffle (Reshape - Transpose - Reshape).
    """
    g = GraphBuilder("shufflenet_unit", seed)
    x = g.input("input", (1, 24, 28, 28))
    half = 58
    left = g.relu(g.bn(g.conv(g.bn(g.depthwise(x, 3, 2, bias=False)), half, 1, pad=0,
                              bias=False)))
    x = _channel_shuffle(g, g.concat([left, _shuffle_branch(g, x, half, 2)]), 2)
    keep, work = g.split(x, [half, half])
    x = _channel_shuffle(g, g.concat([keep, _shuffle_branch(g, work, half, 1)]), 2)
    return g.build([x], doc=shufflenet_unit.__doc__)


def inception_block(seed: int = 0) -> onnx.ModelProto:
    """Inception-v3 module A (Szegedy et al. 2016) as torchvision builds it.

    Four parallel branches - 1x1 | 1x1, 5x5 | 1x1, 3x3, 3x3 | 3x3/1 AveragePool padded 1
    (counting the padding), 1x1 - concatenated on channels.
    """
    g = GraphBuilder("inception_block", seed)
    x = g.input("input", (1, 192, 35, 35))

    def cbr(t: str, cout: int, k: int) -> str:
        return g.relu(g.bn(g.conv(t, cout, k, bias=False)))

    b1 = cbr(x, 64, 1)
    b5 = cbr(cbr(x, 48, 1), 64, 5)
    b3 = cbr(cbr(cbr(x, 64, 1), 96, 3), 96, 3)
    bp = cbr(g.avgpool(x, 3, 1, pad=1, count_include_pad=True), 32, 1)
    return g.build([g.concat([b1, b5, b3, bp])], doc=inception_block.__doc__)


def densenet_block(layers: int = 4, growth: int = 32, seed: int = 0) -> onnx.ModelProto:
    """DenseNet-BC dense block + transition (Huang et al. 2017).

    Each layer: BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), concatenated onto all previous maps.
    Transition: BN-ReLU-conv1x1 (halve channels)-avgpool 2x2/2.
    """
    g = GraphBuilder("densenet_block", seed)
    x = g.input("input", (1, 64, 28, 28))
    for _ in range(layers):
        y = g.conv(g.relu(g.bn(x)), 4 * growth, 1, pad=0, bias=False)
        y = g.conv(g.relu(g.bn(y)), growth, 3, bias=False)
        x = g.concat([x, y])
    x = g.conv(g.relu(g.bn(x)), g.shape(x)[1] // 2, 1, pad=0, bias=False)
    return g.build([g.avgpool(x, 2)], doc=densenet_block.__doc__)


def vgg_block(seed: int = 0) -> onnx.ModelProto:
    """VGG-style (Simonyan & Zisserman 2015) on 32x32: [3x3 conv 64]x2, maxpool,
    [3x3 conv 128]x2, maxpool, Flatten, fc 256, relu, fc 10."""
    g = GraphBuilder("vgg_block", seed)
    x = g.input("input", (1, 3, 32, 32))
    for cout in (64, 128):
        for _ in range(2):
            x = g.relu(g.conv(x, cout, 3))
        x = g.maxpool(x, 2)
    x = g.relu(g.gemm(g.flatten(x), 256))
    return g.build([g.gemm(x, 10, gain=1.0)], doc=vgg_block.__doc__)
