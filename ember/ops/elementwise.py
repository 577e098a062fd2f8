"""Elementwise ops: unary math, activations, broadcasting binary ops, comparisons, logic, Where.

Every elementwise op is a scalar C expression over already-loaded operands (`SCALAR_OPS`).
A `Program` strings such expressions together; a single node is a one-step program, and the
fusion passes build longer ones (a fused elementwise chain, or a Conv/Gemm epilogue whose
input 0 is the accumulator). So one table serves single ops, fused chains and epilogues.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ember.graph import dtypes as dt
from ember.graph.dtypes import DType
from ember.graph.ir import Node, TensorType
from ember.lower.indexing import broadcast_shape, broadcast_strides, offset_expr, strides
from ember.ops.registry import OpDef, fail, register_op, same_layout_inputs
from ember.ops.vecmath import FLOAT32_FUNCTIONS
from ember.render.cwriter import CWriter, c_literal

# An expression builder gets the operand C expressions (simple variables), the operand dtypes,
# the result dtype and the node attributes, and returns a C expression.
Expr = Callable[[list[str], list[DType], DType, dict[str, Any]], str]


def _math(fn: str, ctype: str) -> str:
    """libm function name for the C type: expf for float, exp for double; float exp, log,
    log1p, erf and tanh use the vectorizable versions of ops/vecmath.py instead."""
    return FLOAT32_FUNCTIONS.get(fn, fn + "f") if ctype == "float" else fn


def _lit(value: float, t: DType) -> str:
    return c_literal(value, t)


def _float_unary(body: str) -> Expr:
    """A float unary op from a template: {x} operand, {T} C type, {m.exp} libm function for T,
    {a.alpha} the literal of attribute alpha."""
    def build(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
        return body.format(x=a[0], T=out.c, m=_Fn(out.c), a=_Lit(out, attrs))
    return build


class _Fn:
    """Lets templates write {m.exp} for expf/exp by C type."""
    def __init__(self, ctype: str) -> None:
        self.ctype = ctype

    def __getattr__(self, name: str) -> str:
        return _math(name, self.ctype)


class _Lit:
    """Lets templates write {a.alpha} for the literal of attribute alpha in the result type."""
    def __init__(self, t: DType, attrs: dict[str, Any]) -> None:
        self.t, self.attrs = t, attrs

    def __getattr__(self, name: str) -> str:
        return _lit(float(self.attrs[name]), self.t)


def _binary(op: str) -> Expr:
    return lambda a, ts, out, attrs: f"({a[0]} {op} {a[1]})"


def _compare(op: str) -> Expr:
    return lambda a, ts, out, attrs: f"(uint8_t)({a[0]} {op} {a[1]})"


def _div(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    if out.is_float:
        return f"({a[0]} / {a[1]})"
    # Integer division by zero is undefined in C; ONNX leaves it undefined too, so keep it total.
    return f"({a[1]} == 0 ? ({out.c})0 : ({out.c})({a[0]} / {a[1]}))"


def _mod(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    x, y = a
    if out.is_float:
        r = f"{_math('fmod', out.c)}({x}, {y})"
        if attrs.get("fmod", 0):
            return r
        # numpy.mod: a non-zero remainder takes the sign of the divisor.
        return f"(({r} != 0 && (({r} < 0) != ({y} < 0))) ? {r} + {y} : {r})"
    if attrs.get("fmod", 0):
        return f"({y} == 0 ? ({out.c})0 : ({out.c})({x} % {y}))"
    if not out.is_signed:
        return f"({y} == 0 ? ({out.c})0 : ({out.c})({x} % {y}))"
    # Python-style modulo: the result takes the sign of the divisor.
    return (f"({y} == 0 ? ({out.c})0 : ({out.c})((({x} % {y}) + {y}) % {y}))")


def _pow(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    if out.is_float:
        return f"({out.c}){_math('pow', out.c)}(({out.c}){a[0]}, ({out.c}){a[1]})"
    return f"({out.c})ember_ipow((int64_t){a[0]}, (int64_t){a[1]})"


def _minmax(cmp: str) -> Expr:
    def build(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
        acc = a[0]
        for b in a[1:]:
            if out.is_float:   # NaN wins, as in numpy.maximum/minimum and onnxruntime
                acc = f"(({acc} {cmp} {b} || {acc} != {acc}) ? {acc} : {b})"
            else:
                acc = f"({acc} {cmp} {b} ? {acc} : {b})"
        return acc
    return build


def _sum(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    return "(" + " + ".join(a) + ")"


def _mean(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    return f"(({' + '.join(a)}) / {_lit(len(a), out)})"


def _clip(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    # Bounds come as operands (opset 11+, named in attrs["bounds"]) or as attributes (before).
    x, operands = a[0], dict(zip(attrs.get("bounds", ()), a[1:]))
    lo = operands.get("min", _lit(attrs["min"], out) if "min" in attrs else None)
    hi = operands.get("max", _lit(attrs["max"], out) if "max" in attrs else None)
    if lo is not None:
        x = f"({x} < {lo} ? {lo} : {x})"
    if hi is not None:
        x = f"({x} > {hi} ? {hi} : {x})"
    return x


def _cast(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    if out is dt.BOOL:
        return f"(uint8_t)({a[0]} != 0)"
    return f"({out.c})({a[0]})"


def _shrink(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    x, lambd, bias = a[0], repr(float(attrs["lambd"])), repr(float(attrs["bias"]))
    return (f"({x} < -{lambd} ? ({out.c})({x} + {bias}) : "
            f"{x} > {lambd} ? ({out.c})({x} - {bias}) : ({out.c})0)")


def _abs(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    if out.is_float:
        return f"{_math('fabs', out.c)}({a[0]})"
    if not out.is_signed:
        return a[0]
    return f"({out.c})({a[0]} < 0 ? -{a[0]} : {a[0]})"


def _neg(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    return f"({out.c})(-{a[0]})"


def _sign(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    x = a[0]
    if out.is_float:
        return f"({x} > 0 ? ({out.c})1 : {x} < 0 ? ({out.c})-1 : {x})"   # keeps NaN and 0
    return f"({out.c})(({x} > 0) - ({x} < 0))"


def _relu(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    return f"({a[0]} < 0 ? ({out.c})0 : {a[0]})"


def _gelu(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    m, x, T = _Fn(out.c), a[0], out.c
    if attrs.get("approximate", "none") == "tanh":
        return (f"(({T})0.5 * {x} * (({T})1 + {m.tanh}(({T})0.7978845608028654 * "
                f"({x} + ({T})0.044715 * {x} * {x} * {x}))))")
    if T == "float":
        return f"ember_geluf({x})"      # ops/vecmath.py: a cheaper erf for this use
    return f"(({T})0.5 * {x} * (({T})1 + {m.erf}({x} * ({T})0.7071067811865476)))"


def _sigmoid(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    if out.c == "float":
        return f"ember_sigmoidf({a[0]})"      # ops/vecmath.py: no overflow for x << 0
    return f"(({out.c})1 / (({out.c})1 + exp(-{a[0]})))"


def _isinf(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    x = a[0]
    pos, neg = attrs.get("detect_positive", 1), attrs.get("detect_negative", 1)
    if not ts[0].is_float:
        return "(uint8_t)0"
    checks = [f"{x} == INFINITY"] * bool(pos) + [f"{x} == -INFINITY"] * bool(neg)
    return f"(uint8_t)({' || '.join(checks) or '0'})"


def _bitshift(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    op = "<<" if attrs.get("direction") == "LEFT" else ">>"
    bits = out.itemsize * 8
    return f"({a[1]} >= {bits} ? ({out.c})0 : ({out.c})({a[0]} {op} {a[1]}))"


def _where(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    return f"({a[0]} ? {a[1]} : {a[2]})"


def _prelu(a: list[str], ts: list[DType], out: DType, attrs: dict[str, Any]) -> str:
    return f"({a[0]} < 0 ? ({out.c})({a[1]} * {a[0]}) : {a[0]})"


@dataclass(frozen=True)
class ScalarOp:
    expr: Expr
    dtypes: tuple[DType, ...]
    result: str = "same"       # "same": type of input 0; "bool"; "attr:to"; "like:1" (input 1's)


_F = dt.FLOATS
_NUM = dt.NUMERIC
_SIGNED_NUM = dt.FLOATS + (dt.I8, dt.I16, dt.I32, dt.I64)
_INT = dt.INTS
_ANY = dt.ALL

SCALAR_OPS: dict[str, ScalarOp] = {
    # unary math
    "Abs": ScalarOp(_abs, _NUM),
    "Neg": ScalarOp(_neg, _SIGNED_NUM),
    "Sign": ScalarOp(_sign, _NUM),
    "Exp": ScalarOp(_float_unary("{m.exp}({x})"), _F),
    "Log": ScalarOp(_float_unary("{m.log}({x})"), _F),
    "Sqrt": ScalarOp(_float_unary("{m.sqrt}({x})"), _F),
    "Reciprocal": ScalarOp(_float_unary("(({T})1 / {x})"), _F),
    "Floor": ScalarOp(_float_unary("{m.floor}({x})"), _F),
    "Ceil": ScalarOp(_float_unary("{m.ceil}({x})"), _F),
    "Round": ScalarOp(_float_unary("{m.nearbyint}({x})"), _F),   # half to even
    "Sin": ScalarOp(_float_unary("{m.sin}({x})"), _F),
    "Cos": ScalarOp(_float_unary("{m.cos}({x})"), _F),
    "Tan": ScalarOp(_float_unary("{m.tan}({x})"), _F),
    "Asin": ScalarOp(_float_unary("{m.asin}({x})"), _F),
    "Acos": ScalarOp(_float_unary("{m.acos}({x})"), _F),
    "Atan": ScalarOp(_float_unary("{m.atan}({x})"), _F),
    "Sinh": ScalarOp(_float_unary("{m.sinh}({x})"), _F),
    "Cosh": ScalarOp(_float_unary("{m.cosh}({x})"), _F),
    "Asinh": ScalarOp(_float_unary("{m.asinh}({x})"), _F),
    "Acosh": ScalarOp(_float_unary("{m.acosh}({x})"), _F),
    "Atanh": ScalarOp(_float_unary("{m.atanh}({x})"), _F),
    "Erf": ScalarOp(_float_unary("{m.erf}({x})"), _F),
    "IsNaN": ScalarOp(lambda a, ts, out, at: f"(uint8_t)({a[0]} != {a[0]})", _F, "bool"),
    "IsInf": ScalarOp(_isinf, _F, "bool"),
    "Not": ScalarOp(lambda a, ts, out, at: f"(uint8_t)!{a[0]}", (dt.BOOL,)),
    "BitwiseNot": ScalarOp(lambda a, ts, out, at: f"({out.c})~{a[0]}", _INT),
    "Identity": ScalarOp(lambda a, ts, out, at: a[0], _ANY),
    "Cast": ScalarOp(_cast, _ANY, "attr:to"),
    "CastLike": ScalarOp(_cast, _ANY, "like:1"),
    # activations
    "Relu": ScalarOp(_relu, _SIGNED_NUM),
    "LeakyRelu": ScalarOp(_float_unary("({x} < 0 ? {a.alpha} * {x} : {x})"), _F),
    "Elu": ScalarOp(_float_unary("({x} < 0 ? {a.alpha} * ({m.exp}({x}) - 1) : {x})"), _F),
    "Celu": ScalarOp(_float_unary(
        "({x} < 0 ? {a.alpha} * ({m.exp}({x} / {a.alpha}) - 1) : {x})"), _F),
    "Selu": ScalarOp(_float_unary(
        "({x} <= 0 ? {a.gamma} * ({a.alpha} * {m.exp}({x}) - {a.alpha}) : {a.gamma} * {x})"), _F),
    "ThresholdedRelu": ScalarOp(_float_unary("({x} > {a.alpha} ? {x} : ({T})0)"), _F),
    "Sigmoid": ScalarOp(_sigmoid, _F),
    "HardSigmoid": ScalarOp(_float_unary(
        "{m.fmax}(({T})0, {m.fmin}(({T})1, {a.alpha} * {x} + {a.beta}))"), _F),
    "HardSwish": ScalarOp(_float_unary(
        "({x} * {m.fmax}(({T})0, {m.fmin}(({T})1, {x} / ({T})6 + ({T})0.5)))"), _F),
    "Tanh": ScalarOp(_float_unary("{m.tanh}({x})"), _F),
    "Softplus": ScalarOp(_float_unary(
        "({x} > ({T})20 ? {x} : {m.log1p}({m.exp}({x})))"), _F),
    "Softsign": ScalarOp(_float_unary("({x} / (({T})1 + {m.fabs}({x})))"), _F),
    "Mish": ScalarOp(_float_unary(
        "({x} * {m.tanh}({x} > ({T})20 ? {x} : {m.log1p}({m.exp}({x}))))"), _F),
    "Gelu": ScalarOp(_gelu, _F),
    "Swish": ScalarOp(_float_unary("({x} / (({T})1 + {m.exp}(-{a.alpha} * {x})))"), _F),
    "Shrink": ScalarOp(_shrink, _NUM),
    "Clip": ScalarOp(_clip, _NUM),
    # binary and variadic
    "Add": ScalarOp(_binary("+"), _NUM),
    "Sub": ScalarOp(_binary("-"), _NUM),
    "Mul": ScalarOp(_binary("*"), _NUM),
    "Div": ScalarOp(_div, _NUM),
    "Pow": ScalarOp(_pow, _NUM),
    "Mod": ScalarOp(_mod, _NUM),
    "Max": ScalarOp(_minmax(">"), _NUM),
    "Min": ScalarOp(_minmax("<"), _NUM),
    "Sum": ScalarOp(_sum, _NUM),
    "Mean": ScalarOp(_mean, _F),
    "PRelu": ScalarOp(_prelu, _SIGNED_NUM),
    "Equal": ScalarOp(_compare("=="), _ANY, "bool"),
    "Less": ScalarOp(_compare("<"), _NUM, "bool"),
    "Greater": ScalarOp(_compare(">"), _NUM, "bool"),
    "LessOrEqual": ScalarOp(_compare("<="), _NUM, "bool"),
    "GreaterOrEqual": ScalarOp(_compare(">="), _NUM, "bool"),
    "And": ScalarOp(_compare("&&"), (dt.BOOL,), "bool"),
    "Or": ScalarOp(_compare("||"), (dt.BOOL,), "bool"),
    "Xor": ScalarOp(_compare("!="), (dt.BOOL,), "bool"),
    "BitwiseAnd": ScalarOp(_binary("&"), _INT),
    "BitwiseOr": ScalarOp(_binary("|"), _INT),
    "BitwiseXor": ScalarOp(_binary("^"), _INT),
    "BitShift": ScalarOp(_bitshift, (dt.U8, dt.U16, dt.U32, dt.U64)),
    "Where": ScalarOp(_where, (dt.BOOL,)),
}


def result_dtype(op: str, in_types: list[DType], attrs: dict[str, Any]) -> DType:
    kind = SCALAR_OPS[op].result
    if kind == "bool":
        return dt.BOOL
    if kind == "attr:to":
        return dt.from_onnx(attrs["to"])
    if kind == "like:1":
        return in_types[1]
    if op == "Where":
        return in_types[1]
    return in_types[0]


@dataclass(frozen=True)
class Step:
    op: str
    args: tuple[int, ...]          # < n_inputs: a program input; else step (arg - n_inputs)
    attrs: tuple[tuple[str, Any], ...]
    dtype: DType


@dataclass
class Program:
    """A straight-line program of scalar ops over broadcast inputs; its result is the last step."""
    input_types: list[TensorType]
    steps: list[Step] = field(default_factory=list)

    def add(self, op: str, args: tuple[int, ...], attrs: dict[str, Any], dtype: DType) -> int:
        """Append a step; returns the reference to its result."""
        self.steps.append(Step(op, args, tuple(sorted(attrs.items())), dtype))
        return len(self.input_types) + len(self.steps) - 1

    def ref_dtype(self, ref: int) -> DType:
        n = len(self.input_types)
        return self.input_types[ref].dtype if ref < n else self.steps[ref - n].dtype

    @property
    def dtype(self) -> DType:
        return self.steps[-1].dtype

    def emit(self, w: CWriter, loads: list[str], prefix: str = "e") -> str:
        """Write one `T eK = ...;` line per step over the loaded inputs; returns the result name."""
        names = list(loads)
        for k, step in enumerate(self.steps):
            args = [names[r] for r in step.args]
            ts = [self.ref_dtype(r) for r in step.args]
            expr = SCALAR_OPS[step.op].expr(args, ts, step.dtype, dict(step.attrs))
            name = f"{prefix}{k}"
            w.line(f"const {step.dtype.c} {name} = {expr};")
            names.append(name)
        return names[-1]

    def describe(self) -> str:
        n = len(self.input_types)
        parts = []
        for k, s in enumerate(self.steps):
            args = ",".join(f"x{r}" if r < n else f"s{r - n}" for r in s.args)
            parts.append(f"s{k}={s.op}({args})")
        return "; ".join(parts)


def operands(node: Node) -> list:
    """The inputs a node's scalar expression reads (CastLike's second input only gives a type)."""
    present = [v for v in node.inputs if v is not None]
    return present[:1] if node.op == "CastLike" else present


def node_program(node: Node) -> Program:
    """The one-step program computing `node` from its operands."""
    present = operands(node)
    prog = Program([v.type for v in present])
    prog.add(node.op, tuple(range(len(present))), scalar_attrs(node), node.outputs[0].type.dtype)
    return prog


def scalar_attrs(node: Node) -> dict[str, Any]:
    """The attributes a node's scalar expression reads."""
    attrs = dict(node.attrs)
    if node.op == "Clip" and node.opset >= 11:
        # Omitted optional bounds are skipped; the present ones are operands 1 and 2 in order.
        attrs["bounds"] = tuple(b for b, v in zip(("min", "max"), node.inputs[1:]) if v is not None)
    return attrs


#: string attributes of elementwise ops and their allowed values (the default first)
_STRING_ATTRS = {"BitShift": {"direction": ("RIGHT", "LEFT")},
                 "Gelu": {"approximate": ("none", "tanh")}}


@register_op(*SCALAR_OPS)
class Elementwise(OpDef):
    def check(self, node: Node) -> list[str]:
        allowed = SCALAR_OPS[node.op].dtypes
        kinds = {v.type.dtype for v in node.inputs[:1] if v is not None}
        if node.op == "Where":
            kinds = {node.inputs[0].type.dtype}
        if node.op == "BitShift":
            kinds = {v.type.dtype for v in node.inputs if v is not None}
        bad = sorted(str(t) for t in kinds if t not in allowed)
        if node.op == "Cast" and dt.from_onnx(node.attrs.get("to", 0)) is None:
            return [f"cast to element type {node.attrs.get('to')} is not supported"]
        for name, allowed_values in _STRING_ATTRS.get(node.op, {}).items():
            value = node.attrs.get(name, allowed_values[0])
            if value not in allowed_values:
                return [f"{name} {value!r} is not one of {', '.join(allowed_values)}"]
        return [f"element type {b} is not supported" for b in bad]

    def is_view(self, node: Node) -> bool:
        return node.op == "Identity"

    def overwritable_inputs(self, node: Node) -> tuple[int, ...]:
        # emit_elementwise loads every operand's element i, then stores out[i]
        return same_layout_inputs(node)

    def infer(self, node: Node) -> list[TensorType]:
        present = operands(node)
        if not present:
            raise fail(node, "needs at least one input")
        shape = broadcast_shape(*(v.type.shape for v in present))
        if shape is None:
            raise fail(node, "input shapes do not broadcast: "
                       + " vs ".join(str(list(v.type.shape)) for v in present))
        if node.op == "PRelu" and shape != present[0].type.shape:
            raise fail(node, "slope must broadcast to the shape of X")
        dtype = result_dtype(node.op, [v.type.dtype for v in node.inputs if v is not None],
                             node.attrs)
        return [TensorType(dtype, shape)]

    def lower(self, node: Node, ctx) -> None:
        program = node_program(node)
        present = [name for name in ctx.ins if name is not None][:len(program.input_types)]
        emit_elementwise(ctx.w, program, present, ctx.outs[0], node.outputs[0].type.shape)


def emit_elementwise(w: CWriter, program: Program, in_names: list[str], out_name: str,
                     out_shape: tuple[int, ...]) -> None:
    """The loop computing `program` over `out_shape`, inputs broadcast to it."""
    if all(t.shape == out_shape for t in program.input_types):
        # Same-shape operands: one flat loop the C compiler vectorizes.
        with w.loops((math.prod(out_shape),)) as (i,):
            result = program.emit(w, [f"{name}[{i}]" for name in in_names])
            w.line(f"{out_name}[{i}] = {result};")
        return
    with w.loops(out_shape) as idx:
        loads = [f"{name}[{offset_expr(idx, broadcast_strides(t.shape, out_shape))}]"
                 for name, t in zip(in_names, program.input_types)]
        result = program.emit(w, loads)
        w.line(f"{out_name}[{offset_expr(idx, strides(out_shape))}] = {result};")
