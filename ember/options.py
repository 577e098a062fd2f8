"""CompileOptions: every knob of a compilation. The one place that reads environment variables."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ember.errors import EmberError
from ember.targets import Target, get_target


def default_cache_dir() -> Path:
    env = os.environ.get("EMBER_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ember"


@dataclass(frozen=True)
class CompileOptions:
    target: Target = field(default_factory=lambda: get_target("host"))
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    threads: int = 1
    opt_level: int = 3
    cache_dir: Path = field(default_factory=default_cache_dir)
    verify: bool = field(default_factory=lambda: os.environ.get("EMBER_VERIFY", "") == "1")
    #: whose int8 numerics a TFLite model follows: "micro" (TFLite Micro) or "litert"
    #: (ai-edge-litert's reference kernels, whose FULLY_CONNECTED rounds once)
    int8_numerics: str = "micro"
    #: "auto": choose-layout runs small-map conv regions channels-last; "nchw": every
    #: tensor stays as the model has it (`ember export` always; the NCHW kernels' tests)
    layout: str = field(default_factory=lambda: os.environ.get("EMBER_LAYOUT", "auto"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", get_target(self.target))
        if not isinstance(self.threads, int) or self.threads < 1:
            raise EmberError(f"threads must be a positive integer, got {self.threads!r}")
        if self.opt_level not in (0, 1, 2, 3):
            raise EmberError(f"opt_level must be 0..3, got {self.opt_level!r}")
        if self.layout not in ("auto", "nchw"):
            raise EmberError(f"layout must be 'auto' or 'nchw', got {self.layout!r}")
        if self.int8_numerics not in ("micro", "litert"):
            raise EmberError(f"int8_numerics must be 'micro' or 'litert', got "
                             f"{self.int8_numerics!r}")
        shapes = {}
        for name, shape in (self.input_shapes or {}).items():
            try:
                shapes[str(name)] = tuple(int(d) for d in shape)
            except (TypeError, ValueError):
                raise EmberError(f"input shape for {name!r} must be a sequence of ints, "
                                 f"got {shape!r}") from None
        object.__setattr__(self, "input_shapes", shapes)
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))
