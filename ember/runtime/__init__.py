"""Loading and running compiled artifacts; needs numpy and ctypes, not the compiler."""
from ember.runtime.cpu import CompiledModel, RunError, TensorInfo, load

__all__ = ["CompiledModel", "RunError", "TensorInfo", "load"]
