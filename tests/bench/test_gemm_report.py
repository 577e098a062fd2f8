"""The sgemm section of `make bench`: the timed calls compute the right product, and the
report renders (timings themselves are never asserted)."""
import pytest

from ember.bench import gemm


@pytest.mark.parametrize("constant", [None, "a", "b"])
def test_timed_matmul_is_correct(constant):
    run_ember, run_numpy, err = gemm._ember_matmul(7, 20, 33, constant)
    run_ember()
    run_numpy()
    assert err < 1e-4


def test_markdown_names_the_peak_and_every_shape():
    peak = {"how": "2.50 GHz x 16 = 40.0 GFLOP/s per core", "peak_gflops": 40.0}
    rows = [{"shape": label, "m": m, "n": n, "k": k, "constant": c, "peak_gflops": 40.0,
             "ember_gflops": 30.0,
             "ember_pct_peak": 75.0, "numpy_gflops": 32.0, "numpy_pct_peak": 80.0}
            for label, m, n, k, c in gemm.SHAPES]
    text = gemm.markdown({"peak": peak, "rows": rows})
    assert peak["how"] in text
    assert all(label in text for label, *_ in gemm.SHAPES)
    assert "| 40.0 | 30.0 | 75% | 32.0 | 80% |" in text
