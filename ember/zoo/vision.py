"""Whole image and audio classifiers: a demo CNN, ResNet-18, MobileNetV2, MLPerf Tiny nets, an MLP."""
from __future__ import annotations

import onnx

from ember.zoo.builder import GraphBuilder

#: the last BatchNorm of a residual branch gets a small gamma so the sum of branch and
#: shortcut does not double the activation variance block after block (cf. zero-init residual)
RESIDUAL_GAMMA = (0.2, 0.4)


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """1x3x32x32 -> 10 class probabilities: (conv-bn-relu) x3, maxpool, GAP, gemm, softmax."""
    g = GraphBuilder("small_cnn", seed)
    x = g.input("image", (1, 3, 32, 32))
    for cout, stride in ((16, 1), (32, 2), (64, 1)):
        x = g.relu(g.bn(g.conv(x, cout, 3, stride, bias=False)))
    x = g.global_avg_pool(g.maxpool(x, 2))
    return g.build([g.softmax(g.gemm(g.flatten(x), 10, gain=1.0))], doc=small_cnn.__doc__)


def _basic_block(g: GraphBuilder, x: str, cout: int, stride: int, shortcut_bn: bool = True) -> str:
    """ResNet basic block: conv3x3-bn-relu-conv3x3-bn, plus identity or 1x1 projection, relu."""
    y = g.relu(g.bn(g.conv(x, cout, 3, stride, bias=False)))
    y = g.bn(g.conv(y, cout, 3, bias=False), gamma=RESIDUAL_GAMMA)
    if stride != 1 or g.shape(x)[1] != cout:
        x = g.conv(x, cout, 1, stride, pad=0, bias=not shortcut_bn, gain=1.0)
        x = g.bn(x) if shortcut_bn else x
    return g.relu(g.add(y, x))


def resnet18(batch: int = 1, image: int = 224, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 (He et al. 2016, table 1), torchvision layout with BatchNorm left unfolded.

    conv1 7x7/2 64 | maxpool 3x3/2 | [3x3 64]x2 x2 | [3x3 128]x2 x2 | [3x3 256]x2 x2 |
    [3x3 512]x2 x2 | global avg pool | fc 1000 (logits).
    """
    g = GraphBuilder("resnet18", seed)
    x = g.input("input", (batch, 3, image, image))
    x = g.relu(g.bn(g.conv(x, 64, 7, 2, pad=3, bias=False)))
    x = g.maxpool(x, 3, 2, pad=1)
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            x = _basic_block(g, x, cout, 2 if stage and not block else 1)
    x = g.flatten(g.global_avg_pool(x))
    return g.build([g.gemm(x, 1000, gain=1.0)], doc=resnet18.__doc__)


#: MobileNetV2 inverted-residual settings (Sandler et al. 2018, table 2): t, c, n, s
MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))


def _inverted_residual(g: GraphBuilder, x: str, expand: int, cout: int, stride: int) -> str:
    cin = g.shape(x)[1]
    y = g.relu6(g.conv(x, cin * expand, 1, pad=0)) if expand != 1 else x
    y = g.relu6(g.depthwise(y, 3, stride))
    y = g.conv(y, cout, 1, pad=0, gain=0.5 if stride == 1 and cin == cout else 1.0)
    return g.add(x, y) if stride == 1 and cin == cout else y


def mobilenet_v2(image: int = 224, seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 1.0 as PyTorch exports it: BatchNorm folded into conv biases, ReLU6 as Clip."""
    g = GraphBuilder("mobilenet_v2", seed)
    x = g.input("input", (1, 3, image, image))
    x = g.relu6(g.conv(x, 32, 3, 2))
    for t, c, n, s in MOBILENET_V2:
        for i in range(n):
            x = _inverted_residual(g, x, t, c, s if i == 0 else 1)
    x = g.relu6(g.conv(x, 1280, 1, pad=0))
    x = g.flatten(g.global_avg_pool(x))
    return g.build([g.gemm(x, 1000, gain=1.0)], doc=mobilenet_v2.__doc__)


def resnet8(seed: int = 0) -> onnx.ModelProto:
    """MLPerf Tiny image classification (CIFAR-10): 1x3x32x32 -> 10 probabilities.

    conv 3x3 16 | 3 residual stacks of 16/32/64 filters (stride 1/2/2, 1x1 conv shortcut
    without BatchNorm when downsampling) | avgpool 8x8 | dense 10 | softmax.
    """
    g = GraphBuilder("resnet8", seed)
    x = g.input("input", (1, 3, 32, 32))
    x = g.relu(g.bn(g.conv(x, 16, 3)))
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        x = _basic_block(g, x, cout, stride, shortcut_bn=False)
    x = g.flatten(g.avgpool(x, 8))
    return g.build([g.softmax(g.gemm(x, 10, gain=1.0))], doc=resnet8.__doc__)


def ds_cnn(seed: int = 0) -> onnx.ModelProto:
    """MLPerf Tiny keyword spotting DS-CNN: 1x1x49x10 MFCC -> 12 keyword probabilities.

    conv 10x4/2 64 'same' | 4 x (depthwise 3x3 - bn - relu - pointwise 64 - bn - relu) |
    avgpool over the 25x5 map | dense 12 | softmax.
    """
    g = GraphBuilder("ds_cnn", seed)
    x = g.input("input", (1, 1, 49, 10))
    x = g.relu(g.bn(g.conv(x, 64, (10, 4), 2, auto_pad="SAME_UPPER")))
    for _ in range(4):
        x = g.relu(g.bn(g.depthwise(x, 3)))
        x = g.relu(g.bn(g.conv(x, 64, 1, pad=0)))
    x = g.flatten(g.avgpool(x, g.shape(x)[2:]))
    return g.build([g.softmax(g.gemm(x, 12, gain=1.0))], doc=ds_cnn.__doc__)


def mlp(seed: int = 0) -> onnx.ModelProto:
    """A 784-512-512-10 multilayer perceptron (MNIST-sized) -> logits."""
    g = GraphBuilder("mlp", seed)
    x = g.input("input", (1, 784))
    for width in (512, 512):
        x = g.relu(g.gemm(x, width))
    return g.build([g.gemm(x, 10, gain=1.0)], doc=mlp.__doc__)
