"""Loss ops against onnxruntime: every reduction, weights, ignore_index, extra spatial dims."""
import numpy as np
import pytest

from conftest import check_node


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 3), (2, 3, 1, 2), (1, 1)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 1])
def test_nll_and_sce(reduction, shape, weighted, ignore, rng):
    n, c = shape[0], shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    target = rng.integers(0, c, (n,) + shape[2:]).astype(np.int64)
    attrs = {"reduction": reduction}
    if ignore is not None:
        attrs["ignore_index"] = ignore
        target.flat[0] = ignore
    inits = {"w": rng.uniform(0.5, 2, (c,)).astype(np.float32)} if weighted else {}
    check_node("NegativeLogLikelihoodLoss", {"x": x, "t": target}, attrs, initializers=inits)
    check_node("SoftmaxCrossEntropyLoss", {"x": x, "t": target}, attrs, n_outputs=2,
               initializers=inits)
