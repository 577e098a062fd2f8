"""Names and doc strings from a model never reach generated C as code.

A model whose every name and doc string carries comment delimiters, newlines, backslashes,
preprocessor lines, trigraphs, control and non-ASCII characters must compile, compute the
right values, and produce C in which that text appears, if at all, only escaped inside
comments. The C is read as a compiler reads it (trigraphs, line splices, comments).
"""
from __future__ import annotations

import itertools
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ember
from ember.cli_inspect import inspect_model
from ember.options import CompileOptions

MARK = "EVILMARK"       # in every hostile text; must never appear in code outside comments
HOSTILE = [
    f'{MARK} */ int {MARK}_a = 1; /* ',
    f'{MARK} /* nested',
    f'{MARK}\n#include <stdio.h>\nint {MARK}_b;\n',
    f'{MARK} "quoted" \'single\' \\" \\',
    f'{MARK} ends in a backslash \\',
    f'{MARK} trigraph ??/\nint {MARK}_c; ??= ??( ??) ??\' ??< ??> ??! ??-',
    f'{MARK} */ ??/\n/ naïve — ☃ 名前 \r\n\x1b[31m\x00 \t',
    f'{MARK} // line comment \\\nint {MARK}_d;',
]


def build_model() -> tuple[onnx.ModelProto, dict[str, str]]:
    """x (2,3,4) -> y = relu(x * w) + x, z = transpose(sigmoid(y)) @ m; all names hostile."""
    counter = itertools.count()

    def hostile() -> str:          # a distinct hostile text at each call
        k = next(counter)
        return f"{HOSTILE[k % len(HOSTILE)]} #{k}"

    n = {key: hostile() for key in ("x", "w", "m", "a", "r", "y", "s", "t", "z")}
    nodes = [helper.make_node("Mul", [n["x"], n["w"]], [n["a"]], name=hostile(),
                              doc_string=hostile()),
             helper.make_node("Relu", [n["a"]], [n["r"]], name=hostile(), doc_string=hostile()),
             helper.make_node("Add", [n["r"], n["x"]], [n["y"]], name=hostile()),
             helper.make_node("Sigmoid", [n["y"]], [n["s"]], name=hostile()),
             helper.make_node("Transpose", [n["s"]], [n["t"]], name=hostile(), perm=[0, 2, 1]),
             helper.make_node("MatMul", [n["t"], n["m"]], [n["z"]], name=hostile())]
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), n["w"]),
             numpy_helper.from_array(rng.standard_normal((3, 5)).astype(np.float32), n["m"])]
    for t in inits:
        t.doc_string = hostile()
    graph = helper.make_graph(
        nodes, hostile(), [helper.make_tensor_value_info(n["x"], TensorProto.FLOAT, (2, 3, 4),
                                                         doc_string=hostile())],
        [helper.make_tensor_value_info(n["y"], TensorProto.FLOAT, None),
         helper.make_tensor_value_info(n["z"], TensorProto.FLOAT, None)],
        inits, doc_string=hostile())
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              doc_string=hostile(), producer_name=hostile())
    helper.set_model_props(model, {hostile(): hostile()})
    return model, n


@pytest.fixture(scope="module")
def compiled():
    model, names = build_model()
    return model, names, ember.compile(model)


def expected(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, m = (numpy_helper.to_array(t) for t in model.graph.initializer)
    y = np.maximum(x * w, 0) + x
    z = np.transpose(1 / (1 + np.exp(-y)), (0, 2, 1)) @ m
    return y, z


def test_hostile_model_computes_right_values(compiled, tmp_path):
    model, names, m = compiled
    assert [i.name for i in m.inputs] == [names["x"]]
    assert [o.name for o in m.outputs] == [names["y"], names["z"]]
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    want_y, want_z = expected(model, x)
    for model_ in (m, ember.load(m.save(tmp_path / "saved"))):     # names survive the manifest
        got = model_.run({names["x"]: x})
        np.testing.assert_allclose(got[names["y"]], want_y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[names["z"]], want_z, rtol=1e-4, atol=1e-5)


# C translation phases 1-3, as far as they matter here (C11 with trigraphs, as gcc -std=c11).
TRIGRAPHS = {"??=": "#", "??(": "[", "??/": "\\", "??)": "]", "??'": "^", "??<": "{",
             "??!": "|", "??>": "}", "??-": "~"}
TOKENS = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'|.',
                    re.DOTALL)


def split_comments(source: str) -> tuple[str, list[str]]:
    """(the code with every comment replaced by a space, the comment bodies)."""
    text = re.sub(r"\?\?[=(/)'<!>-]", lambda t: TRIGRAPHS[t.group()], source)
    text = text.replace("\\\n", "")
    code, comments = [], []
    for token in TOKENS.findall(text):
        if token.startswith(("/*", "//")):
            comments.append(token[2:-2] if token.startswith("/*") else token[2:])
            code.append(" ")
        else:
            code.append(token)
    return "".join(code), comments


def test_model_text_never_reaches_c_code(compiled):
    _, _, m = compiled
    source = m.source
    assert source and MARK in source            # the names are there, in comments
    assert all(c == "\n" or " " <= c <= "~" for c in source), "only printable ASCII and newlines"
    code, comments = split_comments(source)
    assert MARK not in code
    for body in comments:
        assert "*/" not in body and "/*" not in body
        if MARK in body:
            assert "??" not in body and "\\" not in body
    for line in source.splitlines():
        assert not line.lstrip().startswith("#include <stdio.h>")
        assert not line.rstrip().endswith("\\"), "no line splices"


def test_comment_escaper_is_not_fooled():
    from ember.render.cwriter import c_comment
    for text in HOSTILE + ["*" * 5 + "/" * 5, "/" * 3 + "*" * 3, "?" * 7 + "/", "é" * 3 + "/"]:
        safe = c_comment(text)
        code, comments = split_comments(f"/* {safe} */")
        assert code.strip() == "" and len(comments) == 1, (text, safe)
        assert "/*" not in comments[0] and "??" not in safe and "\\" not in safe


def test_inspect_output_escapes_names(tmp_path):
    model, _ = build_model()
    path = tmp_path / "hostile.onnx"
    onnx.save(model, path)
    for after in (None, "eliminate-dead"):
        text = inspect_model(path, CompileOptions(), after)
        assert MARK in text
        for line in text.splitlines():
            assert line.isprintable(), repr(line)
            assert not line.startswith("#include")
