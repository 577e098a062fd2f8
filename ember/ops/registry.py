"""The op registry: each supported op has one OpDef with its type inference and its lowering.

An OpDef lives in its op family's file (elementwise.py, conv.py ...) and is registered with
`@register_op("Name", ...)`. Attribute defaults are filled from the ONNX schema by the frontend,
so `node.attrs` always holds every attribute the schema defines a default for.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from ember.errors import ShapeError, UnsupportedError
from ember.graph.dtypes import DType
from ember.graph.ir import Node, TensorType

if TYPE_CHECKING:
    from ember.lower.kernel import KernelContext


class OpDef:
    """Type inference and lowering for one op (or a family sharing one implementation)."""

    #: element types this op compiles for (checked on the first input); None: any Ember dtype
    dtypes: Sequence[DType] | None = None
    #: True when the kernel can apply a fused elementwise epilogue to its output
    accepts_epilogue: bool = False

    def check(self, node: Node) -> list[str]:
        """What in `node` Ember cannot compile, one phrase each (empty when all is fine)."""
        problems = []
        if self.dtypes is not None and node.inputs and node.inputs[0] is not None:
            dt = node.inputs[0].type.dtype
            if dt not in self.dtypes:
                problems.append(f"element type {dt} is not supported (supported: "
                                f"{', '.join(d.name for d in self.dtypes)})")
        return problems

    def infer(self, node: Node) -> list[TensorType]:
        raise NotImplementedError

    def is_view(self, node: Node) -> bool:
        """True when output 0 is input 0's bytes unchanged (a reshape): lowering then makes it a
        view of the input's buffer instead of a kernel."""
        return False

    def overwritable_inputs(self, node: Node) -> tuple[int, ...]:
        """Inputs whose buffer output 0 may take over (in-place) when the input is read by
        nothing after this node: the kernel reads each element of that input before it writes
        output 0's element at the same byte offset, and reads no element after writing it.
        Default: none. The memory plan decides; it never takes a graph input's buffer."""
        return ()

    def flops(self, node: Node) -> int:
        """Arithmetic operations the node performs (multiply-add counts 2); for reports."""
        return sum(v.type.size for v in node.outputs)

    def lower(self, node: Node, ctx: "KernelContext") -> None:
        """Write the kernel body for `node` into ctx.w (see lower/kernel.py)."""
        raise NotImplementedError


_REGISTRY: dict[str, OpDef] = {}


def register_op(*names: str) -> Callable[[type[OpDef]], type[OpDef]]:
    def wrap(cls: type[OpDef]) -> type[OpDef]:
        instance = cls()
        for name in names:
            if name in _REGISTRY:
                raise RuntimeError(f"op {name} registered twice")
            _REGISTRY[name] = instance
        return cls
    return wrap


def get_op(name: str) -> OpDef | None:
    _load_families()
    return _REGISTRY.get(name)


def registered_ops() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def _load_families() -> None:
    # Importing the family modules registers their ops.
    import ember.ops  # noqa: F401


def same_layout_inputs(node: Node) -> tuple[int, ...]:
    """Inputs laid out as output 0 (same shape, same element size): element i of each sits at
    output 0's element i's byte offset. What an elementwise kernel may overwrite in place."""
    out = node.outputs[0].type
    return tuple(k for k, v in enumerate(node.inputs)
                 if v is not None and v.type.shape == out.shape
                 and v.type.dtype.numpy.itemsize == out.dtype.numpy.itemsize)


def fail(node: Node, message: str) -> ShapeError:
    """A ShapeError for `node` (raise the result)."""
    return ShapeError(message, node=node.name, op=node.op)


def unsupported(node: Node, message: str) -> UnsupportedError:
    return UnsupportedError(message, node=node.name, op=node.op)


def normalize_axis(node: Node, axis: int, rank: int) -> int:
    """A possibly negative axis made non-negative; error when outside [-rank, rank)."""
    if not -rank <= axis < rank:
        raise fail(node, f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def same_type(node: Node, i: int = 0) -> list[TensorType]:
    """Inference for ops whose single output has the type of input i."""
    return [node.inputs[i].type]
