"""The sequential layer space: plain CNNs as a sequence of layers (NAS-RL, MetaQNN).

A network is up to ``max_depth`` layers, each a ``conv`` (filter height/width, stride
height/width, number of filters: NAS-RL's tokens, Zoph & Le 2017), a max ``pool``
(kernel, stride), a fully connected ``fc`` layer (units) or a global average pool
``gap`` (MetaQNN's layer types, Baker et al. 2017), followed by the softmax classifier.
Positions after the last layer hold ``none``.

Arch choices per position ``i``: ``layer{i}.type``, ``.kernel_h``, ``.kernel_w``,
``.stride_h``, ``.stride_w``, ``.filters`` (conv), ``.pool_kernel``, ``.pool_stride``
(pool), ``.units`` (fc) and ``.inputs`` (the sorted list of earlier layers feeding
layer ``i``; ``[]`` = the image). Parameters a layer does not use hold their choice's
first value, so one network has one description (and one ``arch.hash``). The space's
options are recorded as single-valued ``space.*`` choices (integers, or comma-separated
strings for value sets), so ``for_arch`` rebuilds the space from an arch alone.

Two grammars set the defaults of the value sets (``grammar``): ``nasrl`` (the default;
NAS-RL's conv tokens: kernels 1/3/5/7, filters 24/36/48/64) and ``metaqnn`` (MetaQNN's
state-action space, Table 1 of the paper: square conv kernels 1/3/5 (``square``) of stride 1
with 64/128/256/512 filters, each no larger than the representation (``conv_fits``), max pools
(5,3), (3,2), (2,2) as kernel/stride pairs (``pools``), fc layers of 512/256/128 units, at
most two, only once the representation is at most 7 pixels, termination by softmax or
global average pooling). ``dropout`` adds MetaQNN's dropout (after every second layer and
after each fc, the ``i``-th of ``n`` at ``i / 2n``, the official code's placement);
``batch_norm=false`` builds convs without BatchNorm (the paper's Caffe networks had none).

Rules (``check_consistency``, MetaQNN's transition rules): at least one layer, no layer
after a ``none``; no pooling first or right after pooling; a pool kernel fits its input;
``fc`` only once the representation is at most ``fc_max_size`` pixels wide, at most
``max_fc`` of them, only ``fc`` after ``fc`` and with non-increasing units; ``gap``
terminates the network. Without ``skips`` layer ``i`` reads layer ``i - 1``; with
``skips`` (NAS-RL's anchor points) a conv or pool layer may read any set of earlier
layers. ``build`` applies NAS-RL's compilation-failure fixes: a layer with no input
reads the image, inputs of different sizes are zero-padded to the largest and
concatenated along channels, and every output no layer consumes goes to the classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.spaces.base import Choice, OpChoice, SearchSpace, ValueChoice, register_space

LAYER_TYPES: tuple[str, ...] = ("conv", "pool", "fc", "gap")
GRAMMARS = ("nasrl", "metaqnn")
#: MetaQNN's state-action space (Baker et al. 2017, Table 1 and section 4.2; bowenbaker/metaqnn
#: models/cifar10/state_space_parameters.py): the ``metaqnn`` grammar's values
METAQNN = {"kernel_sizes": (1, 3, 5), "strides": (1,), "filters": (64, 128, 256, 512),
           "pools": ((5, 3), (3, 2), (2, 2)), "fc_units": (512, 256, 128), "max_fc": 2, "fc_max_size": 7}
NONE = "none"
#: per-layer parameter choices and the layer type that uses each
PARAMS: dict[str, str] = {
    "kernel_h": "conv", "kernel_w": "conv", "stride_h": "conv", "stride_w": "conv", "filters": "conv",
    "pool_kernel": "pool", "pool_stride": "pool", "units": "fc",
}
SPATIAL = ("conv", "pool")


@dataclass(frozen=True)
class SubsetChoice:
    """Pick any subset of ``range(n)`` (a sorted tuple of distinct indices; ``()`` allowed)."""

    label: str
    n: int

    @property
    def size(self) -> int:
        return 2 ** self.n

    @property
    def values(self) -> tuple[tuple[int, ...], ...]:
        """Every subset, in a fixed order (for tabular benchmarks over the choices)."""
        return tuple(tuple(j for j in range(self.n) if mask >> j & 1) for mask in range(2 ** self.n))

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(i) for i in np.flatnonzero(rng.random(self.n) < 0.5))

    def check(self, value: Any) -> str | None:
        if not isinstance(value, (list, tuple)):
            return f"{value!r} must be a list of earlier layer indices"
        if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.n for i in value):
            return f"{list(value)!r} has an index outside 0..{self.n - 1}" if self.n else \
                f"{list(value)!r} must be [] (layer 0 reads the image)"
        if len(set(value)) != len(value) or list(value) != sorted(value):
            return f"{list(value)!r} must hold distinct indices in increasing order"
        return None

    def mutate(self, value: Any, rng: np.random.Generator) -> tuple[int, ...]:
        if self.n == 0:
            return tuple(value)
        flip = int(rng.integers(self.n))
        return tuple(sorted(set(value) ^ {flip}))


@dataclass(frozen=True)
class Layer:
    """One layer of a network of the layer space (unused parameters hold any value)."""

    type: str
    kernel_h: int = 1
    kernel_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    filters: int = 0
    pool_kernel: int = 2
    pool_stride: int = 2
    units: int = 0
    inputs: tuple[int, ...] = ()

    def key(self) -> tuple:
        """The layer without its inputs, only the parameters its type uses (hashable)."""
        if self.type == "conv":
            return ("conv", self.kernel_h, self.kernel_w, self.stride_h, self.stride_w, self.filters)
        if self.type == "pool":
            return ("pool", self.pool_kernel, self.pool_stride)
        if self.type == "fc":
            return ("fc", self.units)
        return (self.type,)

    def describe(self) -> str:
        if self.type == "conv":
            s = f"conv{self.kernel_h}x{self.kernel_w}"
            if (self.stride_h, self.stride_w) != (1, 1):
                s += f"/{self.stride_h}x{self.stride_w}"
            return s + f"-{self.filters}"
        if self.type == "pool":
            return f"pool{self.pool_kernel}/{self.pool_stride}"
        if self.type == "fc":
            return f"fc{self.units}"
        return self.type


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output length of a conv with padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def pool_out(size: int, kernel: int, stride: int) -> int:
    """Output length of an unpadded max pool with ``ceil_mode`` (needs ``kernel <= size``)."""
    return math.ceil((size - kernel) / stride) + 1


def _ints(name: str, value: Any, lo: int = 1) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    try:
        out = tuple(int(v) for v in value)
        if any(isinstance(v, bool) or isinstance(v, float) and not float(v).is_integer() for v in value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"layers space: {name}={value!r} must be a list of integers, e.g. [1, 3, 5]") from None
    if not out or any(v < lo for v in out) or len(set(out)) != len(out):
        raise ConfigError(f"layers space: {name}={list(out)!r} must be distinct integers >= {lo}; fix the list")
    return out


def _fmt(values: Sequence[Any]) -> str:
    return ",".join(str(v) for v in values)


def _fmt_pairs(pairs: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{k}x{s}" for k, s in pairs)


def _pairs(value: Any) -> tuple[tuple[int, int], ...]:
    """Pool (kernel, stride) pairs from ``[[5, 3], [3, 2]]`` or ``"5x3,3x2"``."""
    try:
        if isinstance(value, str):
            value = [p.split("x") for p in value.replace(" ", "").split(",") if p]
        out = tuple((int(k), int(s)) for k, s in value)
        if any(isinstance(v, bool) or isinstance(v, float) and not float(v).is_integer()
               for pair in value for v in pair):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"layers space: pools={value!r} must be [kernel, stride] pairs, e.g. "
                          "[[5, 3], [3, 2], [2, 2]]") from None
    if not out or any(s < 1 or s > k for k, s in out) or len(set(out)) != len(out):
        raise ConfigError(f"layers space: pools={[list(p) for p in out]} must be distinct [kernel, stride] pairs "
                          "with 1 <= stride <= kernel")
    return out


@register_space
class LayerSpace(SearchSpace):
    """Plain CNNs as a sequence of conv/pool/fc/gap layers, optional skip connections.

    ``grammar=nasrl`` defaults fit 8x8 images (digits): depth 6, pools 2 and 3 with stride 2,
    fc 128/64; ``image_size`` above 16 (CIFAR) switches the automatic ones to depth 12, pools
    2/3/5 with strides 2/3 and fc 512/256/128. ``grammar=metaqnn`` takes MetaQNN's values
    (``METAQNN``) whatever the image size, depth 6 (up to 16 px) or 12 (the paper's Table 1).
    """

    name = "layers"
    version = 1
    description = "plain CNNs as a sequence of conv/pool/fc/gap layers, optional skips (NAS-RL, MetaQNN)"

    def __init__(self, max_depth: int | None = None, image_size: int = 8, types: Any = LAYER_TYPES,
                 kernel_sizes: Any = None, strides: Any = None, filters: Any = None,
                 pool_kernels: Any = None, pool_strides: Any = None, fc_units: Any = None,
                 max_fc: int | None = None, fc_max_size: int | None = None, skips: bool | int = False,
                 grammar: str = "nasrl", pools: Any = None, conv_fits: bool | int | None = None,
                 dropout: bool | int = False, batch_norm: bool | int = True, square: bool | int | None = None):
        if grammar not in GRAMMARS:
            raise ConfigError(f"layers space: grammar={grammar!r} is unknown; use one of {list(GRAMMARS)}")
        self.grammar = grammar
        mq = grammar == "metaqnn"
        self.image_size = self._int("image_size", image_size, 1, 4096)
        small = self.image_size <= 16
        if mq:
            kernel_sizes = METAQNN["kernel_sizes"] if kernel_sizes is None else kernel_sizes
            strides = METAQNN["strides"] if strides is None else strides
            filters = METAQNN["filters"] if filters is None else filters
            fc_units = METAQNN["fc_units"] if fc_units is None else fc_units
            max_fc = METAQNN["max_fc"] if max_fc is None else max_fc
            fc_max_size = METAQNN["fc_max_size"] if fc_max_size is None else fc_max_size
            if pools is None and pool_kernels is None and pool_strides is None:
                pools = METAQNN["pools"]
            conv_fits = True if conv_fits is None else conv_fits
            square = True if square is None else square
        kernel_sizes = (1, 3, 5, 7) if kernel_sizes is None else kernel_sizes
        strides = (1,) if strides is None else strides
        filters = (24, 36, 48, 64) if filters is None else filters
        max_fc = 2 if max_fc is None else max_fc
        fc_max_size = 4 if fc_max_size is None else fc_max_size
        conv_fits = False if conv_fits is None else conv_fits
        square = False if square is None else square
        for flag, value in (("skips", skips), ("conv_fits", conv_fits), ("dropout", dropout),
                            ("batch_norm", batch_norm), ("square", square)):
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise ConfigError(f"layers space: {flag}={value!r} must be true or false")
        self.conv_fits, self.dropout, self.batch_norm = bool(conv_fits), bool(dropout), bool(batch_norm)
        self.square = bool(square)
        self.pools: tuple[tuple[int, int], ...] | None = None
        if pools is not None:
            self.pools = _pairs(pools)
            kernels = tuple(dict.fromkeys(k for k, _ in self.pools))
            strides_ = tuple(dict.fromkeys(s for _, s in self.pools))
            for name, given, derived in (("pool_kernels", pool_kernels, kernels), ("pool_strides", pool_strides,
                                                                                     strides_)):
                if given is not None and _ints(name, given) != derived:
                    raise ConfigError(f"layers space: {name}={list(_ints(name, given))} disagrees with pools="
                                      f"{_fmt_pairs(self.pools)}; give pools alone")
            pool_kernels, pool_strides = kernels, strides_
        self.max_depth = self._int("max_depth", (6 if small else 12) if max_depth is None else max_depth, 1, 64)
        if isinstance(types, str):
            types = [t for t in types.replace(" ", "").split(",") if t]
        types = tuple(str(t) for t in types) if isinstance(types, (list, tuple)) else types
        if not isinstance(types, tuple) or not types or any(t not in LAYER_TYPES for t in types) \
                or len(set(types)) != len(types):
            raise ConfigError(f"layers space: types={types!r} must be distinct names out of {list(LAYER_TYPES)}")
        if not {"conv", "gap", "fc"} & set(types) or types == ("pool",):
            raise ConfigError("layers space: types needs 'conv' (or 'fc'/'gap'); e.g. types=[conv, pool]")
        self.types = tuple(t for t in LAYER_TYPES if t in types)
        self.kernel_sizes = _ints("kernel_sizes", kernel_sizes)
        self.strides = _ints("strides", strides)
        self.filters = _ints("filters", filters)
        self.pool_kernels = _ints("pool_kernels", ((2, 3) if small else (2, 3, 5)) if pool_kernels is None
                                  else pool_kernels)
        self.pool_strides = _ints("pool_strides", ((2,) if small else (2, 3)) if pool_strides is None
                                  else pool_strides)
        self.fc_units = _ints("fc_units", ((128, 64) if small else (512, 256, 128)) if fc_units is None else fc_units)
        self.max_fc = self._int("max_fc", max_fc, 0, 64)
        self.fc_max_size = self._int("fc_max_size", fc_max_size, 1, 4096)
        if not {"conv", "gap"} & set(self.types) and self.image_size > self.fc_max_size:
            raise ConfigError(f"layers space: types={list(self.types)} cannot start on {self.image_size}x"
                              f"{self.image_size} images (fc needs at most {self.fc_max_size}); add conv or gap")
        self.skips = bool(skips)
        self.pool_pairs: tuple[tuple[int, int], ...] = self.pools or tuple(
            (k, s_) for k in self.pool_kernels for s_ in self.pool_strides if s_ <= k)

    @staticmethod
    def _int(name: str, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
            raise ConfigError(f"layers space: {name}={value!r} is out of range; use an integer from {lo} to {hi}")
        return int(value)

    # --- declarations ----------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """The space options as recorded in an arch (``space.*`` single-valued choices)."""
        return {
            "space.max_depth": self.max_depth, "space.image_size": self.image_size,
            "space.types": _fmt(self.types), "space.kernel_sizes": _fmt(self.kernel_sizes),
            "space.strides": _fmt(self.strides), "space.filters": _fmt(self.filters),
            "space.pool_kernels": _fmt(self.pool_kernels), "space.pool_strides": _fmt(self.pool_strides),
            "space.fc_units": _fmt(self.fc_units), "space.max_fc": self.max_fc,
            "space.fc_max_size": self.fc_max_size, "space.skips": int(self.skips),
            # recorded only where they differ from the original space's, so older archs keep their hash
            **({"space.pools": _fmt_pairs(self.pools)} if self.pools is not None else {}),
            **({"space.conv_fits": 1} if self.conv_fits else {}),
            **({"space.square": 1} if self.square else {}),
            **({"space.dropout": 1} if self.dropout else {}),
            **({"space.batch_norm": 0} if not self.batch_norm else {}),
        }

    def param_values(self, param: str) -> tuple[int, ...]:
        """Allowed values of a per-layer parameter (``kernel_h``, ``filters``, ``units``...)."""
        return {"kernel_h": self.kernel_sizes, "kernel_w": self.kernel_sizes, "stride_h": self.strides,
                "stride_w": self.strides, "filters": self.filters, "pool_kernel": self.pool_kernels,
                "pool_stride": self.pool_strides, "units": self.fc_units}[param]

    def choices(self) -> dict[str, Choice]:
        out: dict[str, Any] = {label: ValueChoice(label, (value,)) for label, value in self.options().items()}
        for i in range(self.max_depth):
            out[f"layer{i}.type"] = OpChoice(f"layer{i}.type", self.types + (NONE,))
            for param in PARAMS:
                out[f"layer{i}.{param}"] = ValueChoice(f"layer{i}.{param}", self.param_values(param))
            out[f"layer{i}.inputs"] = SubsetChoice(f"layer{i}.inputs", i)
        return out

    @classmethod
    def for_arch(cls, arch: Arch) -> "LayerSpace":
        given = dict(arch.choices)
        missing = [k for k in ("space.max_depth", "space.image_size", "space.types") if k not in given]
        if missing:
            raise ArchError(f"architecture lacks the layer-space option '{missing[0]}'; use an arch.json "
                            "written by a layers search")
        kwargs = {key.split(".", 1)[1]: value for key, value in given.items() if key.startswith("space.")}
        try:
            return cls(**kwargs)
        except TypeError:
            raise ArchError(f"architecture has unknown layer-space options {sorted(kwargs)}; use an arch.json "
                            "written by this nasforge version") from None
        except ConfigError as exc:
            raise ArchError(f"architecture's recorded space option is invalid ({exc}); fix its 'space.*' "
                            "choices") from None

    # --- arch <-> layers -------------------------------------------------------
    def layers_of(self, arch: Arch) -> list[Layer]:
        """The layers of an arch (positions up to the first ``none``)."""
        out = []
        for i in range(self.max_depth):
            kind = arch[f"layer{i}.type"]
            if kind == NONE:
                break
            out.append(Layer(kind, **{p: arch[f"layer{i}.{p}"] for p in PARAMS},
                             inputs=tuple(arch[f"layer{i}.inputs"])))
        return out

    def arch_of(self, layers: Sequence[Layer]) -> Arch:
        """The canonical arch of a layer list (unused parameters at their first value)."""
        if len(layers) > self.max_depth:
            raise ArchError(f"{len(layers)} layers exceed the space's max_depth={self.max_depth}; "
                            "raise space.max_depth or drop layers")
        choices: dict[str, Any] = dict(self.options())
        for i in range(self.max_depth):
            layer = layers[i] if i < len(layers) else Layer(NONE)
            choices[f"layer{i}.type"] = layer.type
            for param, owner in PARAMS.items():
                used = layer.type == owner
                choices[f"layer{i}.{param}"] = int(getattr(layer, param)) if used else self.param_values(param)[0]
            choices[f"layer{i}.inputs"] = sorted(int(j) for j in layer.inputs)
        return Arch(self.name, choices, self.version)

    def chain(self, layers: Iterable[Layer]) -> list[Layer]:
        """``layers`` wired as a plain chain (layer ``i`` reads layer ``i - 1``)."""
        out = []
        for i, layer in enumerate(layers):
            out.append(Layer(**{**layer.__dict__, "inputs": (i - 1,) if i else ()}))
        return out

    # --- rules -------------------------------------------------------------------
    def input_size(self, sizes: Sequence[tuple[int, int]], inputs: Sequence[int]) -> tuple[int, int]:
        """Spatial size of a layer's input: the image, or its inputs zero-padded to the largest."""
        if not inputs:
            return self.image_size, self.image_size
        return max(sizes[j][0] for j in inputs), max(sizes[j][1] for j in inputs)

    def allowed_types(self, prev: str, size: tuple[int, int], depth: int, fc_count: int, last_units: int,
                      input_size: tuple[int, int] | None = None) -> list[str]:
        """Layer types allowed at position ``depth`` after a ``prev`` layer (``"start"`` first) whose
        output is ``size`` pixels; ``none`` (end the network) included where allowed."""
        out = [NONE] if depth > 0 else []
        if depth >= self.max_depth or prev == "gap":
            return out
        isize = input_size or size
        if prev in ("start", "conv", "pool"):
            for t in ("conv", "gap"):
                if t in self.types:
                    out.append(t)
            if "pool" in self.types and prev == "conv" and min(isize) >= min(self.pool_kernels):
                out.append("pool")
            if "fc" in self.types and self.max_fc > 0 and max(size) <= self.fc_max_size:
                out.append("fc")
        elif prev == "fc" and "fc" in self.types and fc_count < self.max_fc and min(self.fc_units) <= last_units:
            out.append("fc")
        return out

    def check_consistency(self, arch: Arch) -> None:
        """MetaQNN's transition rules, the wiring rules and canonical unused parameters."""
        layers = self.layers_of(arch)
        if not layers:
            raise ArchError("the network has no layer; set layer0.type to one of " + str(list(self.types)))
        for i in range(len(layers), self.max_depth):
            if arch[f"layer{i}.type"] != NONE:
                raise ArchError(f"layer{i}.type is '{arch[f'layer{i}.type']}' after a 'none' layer; a network "
                                f"ends at its first 'none', set layer{i}.type to none")
        canonical = self.arch_of(layers)
        for label, value in arch.choices:
            if canonical[label] != value:
                i = int(label.split(".")[0][5:])
                what = f"a {layers[i].type} layer" if i < len(layers) else "a 'none' position"
                raise ArchError(f"choice '{label}'={value!r} is unused by {what}; set it to "
                                f"{canonical[label]!r} so one network has one description")
        self.shapes(layers)

    def shapes(self, layers: Sequence[Layer]) -> list[tuple[str, int, int, int]]:
        """Check the rules and return per layer ``(kind, channels_or_units, H, W)`` (kind
        ``map`` or ``vec``); raise ``ArchError`` naming the first broken rule."""
        if not layers:
            raise ArchError("the network has no layer; set layer0.type to one of " + str(list(self.types)))
        out: list[tuple[str, int, int, int]] = []
        sizes: list[tuple[int, int]] = []
        prev, fc_count, last_units = "start", 0, max(self.fc_units)
        for i, layer in enumerate(layers):
            sequential = (i - 1,) if i else ()
            if not self.skips or layer.type not in SPATIAL:
                if tuple(layer.inputs) != sequential:
                    why = "skips are off" if not self.skips else f"a {layer.type} layer reads the previous layer only"
                    raise ArchError(f"layer{i}.inputs={list(layer.inputs)} but {why}; set it to {list(sequential)}")
            isize = self.input_size(sizes, layer.inputs)
            prev_size = sizes[-1] if sizes else (self.image_size, self.image_size)
            allowed = self.allowed_types(prev, prev_size, i, fc_count, last_units, isize)
            if layer.type not in allowed:
                raise ArchError(f"layer{i}.type '{layer.type}' is not allowed after {prev} "
                                f"(representation {prev_size[0]}x{prev_size[1]}, {fc_count} fc so far); "
                                f"use one of {[t for t in allowed if t != NONE] or ['none']}")
            if layer.type == "conv":
                if self.square and (layer.kernel_h != layer.kernel_w or layer.stride_h != layer.stride_w):
                    raise ArchError(f"layer{i} is a {layer.kernel_h}x{layer.kernel_w} conv of stride {layer.stride_h}x"
                                    f"{layer.stride_w}, but space.square asks for square kernels and strides; use "
                                    f"{layer.kernel_h}x{layer.kernel_h}, stride {layer.stride_h}x{layer.stride_h}")
                if self.conv_fits and max(layer.kernel_h, layer.kernel_w) > min(isize):
                    raise ArchError(f"layer{i} has a {layer.kernel_h}x{layer.kernel_w} kernel on a {isize[0]}x{isize[1]} "
                                    f"representation (space.conv_fits: a receptive field at most the representation); "
                                    f"use a kernel of at most {min(isize)}")
                c = layer.filters
                size = (conv_out(isize[0], layer.kernel_h, layer.stride_h),
                        conv_out(isize[1], layer.kernel_w, layer.stride_w))
            elif layer.type == "pool":
                if layer.pool_kernel > min(isize):
                    raise ArchError(f"layer{i}.pool_kernel={layer.pool_kernel} is larger than its "
                                    f"{isize[0]}x{isize[1]} input; use a kernel of at most {min(isize)}")
                if layer.pool_stride > layer.pool_kernel:
                    raise ArchError(f"layer{i}.pool_stride={layer.pool_stride} exceeds its kernel "
                                    f"{layer.pool_kernel}; use a stride of at most the kernel")
                if (layer.pool_kernel, layer.pool_stride) not in self.pool_pairs:
                    raise ArchError(f"layer{i} pools {layer.pool_kernel}/{layer.pool_stride}, not one of the space's "
                                    f"pools {_fmt_pairs(self.pool_pairs)}; use one of those kernel/stride pairs")
                c = sum(out[j][1] for j in layer.inputs) if layer.inputs else -1
                size = (pool_out(isize[0], layer.pool_kernel, layer.pool_stride),
                        pool_out(isize[1], layer.pool_kernel, layer.pool_stride))
            elif layer.type == "fc":
                if prev == "fc" and layer.units > last_units:
                    raise ArchError(f"layer{i}.units={layer.units} exceeds the previous fc's {last_units}; "
                                    "fc widths must not increase, use fewer units")
                fc_count += 1
                last_units = layer.units
                c, size = layer.units, (1, 1)
            else:  # gap
                c, size = -1, (1, 1)
            out.append(("vec" if layer.type == "fc" else "map", c, *size))
            sizes.append(size)
            prev = layer.type
        return out

    # --- sampling and mutation --------------------------------------------------
    def random_layer(self, kind: str, rng: np.random.Generator, input_size: tuple[int, int],
                     last_units: int) -> Layer | None:
        """A uniformly random layer of ``kind`` that fits its input (None when none fits)."""
        def pick(values: Sequence[int]) -> int:
            return int(values[int(rng.integers(len(values)))])

        if kind == "conv":
            kernels = self.conv_kernels(input_size)
            if not kernels:
                return None
            if self.square:
                k, s_ = pick(kernels), pick(self.strides)
                return Layer("conv", k, k, s_, s_, pick(self.filters))
            return Layer("conv", pick(kernels), pick(kernels), pick(self.strides),
                         pick(self.strides), pick(self.filters))
        if kind == "pool":
            pairs = [(k, s) for k, s in self.pool_pairs if k <= min(input_size)]
            if not pairs:
                return None
            k, s = pairs[int(rng.integers(len(pairs)))]
            return Layer("pool", pool_kernel=k, pool_stride=s)
        if kind == "fc":
            units = [u for u in self.fc_units if u <= last_units]
            return Layer("fc", units=pick(units)) if units else None
        return Layer(kind)

    def conv_kernels(self, input_size: tuple[int, int]) -> tuple[int, ...]:
        """Conv kernel sizes allowed on a representation of ``input_size`` (all, unless ``conv_fits``)."""
        if not self.conv_fits:
            return self.kernel_sizes
        return tuple(k for k in self.kernel_sizes if k <= min(input_size))

    def sample(self, rng: np.random.Generator) -> Arch:
        """A random valid network: a depth drawn uniformly from 1..max_depth, then at each
        position a uniformly chosen allowed type and uniform parameters (ending early only
        where the rules allow nothing else); with skips each earlier layer feeds a conv or
        pool layer with probability 1/2."""
        depth = int(rng.integers(1, self.max_depth + 1))
        layers: list[Layer] = []
        while len(layers) < depth:
            layer = self._random_next(layers, rng, last=len(layers) == depth - 1)
            if layer is None:
                break
            layers.append(layer)
        return self.arch_of(layers)

    def _state(self, layers: Sequence[Layer]) -> tuple[str, tuple[int, int], int, int, list[tuple[int, int]]]:
        shapes = self.shapes(layers) if layers else []
        sizes = [(h, w) for _, _, h, w in shapes]
        fcs = [l.units for l in layers if l.type == "fc"]
        prev = layers[-1].type if layers else "start"
        size = sizes[-1] if sizes else (self.image_size, self.image_size)
        return prev, size, len(fcs), fcs[-1] if fcs else max(self.fc_units), sizes

    def _random_next(self, layers: Sequence[Layer], rng: np.random.Generator, last: bool = True) -> Layer | None:
        """A random allowed layer to append to ``layers`` (None: end the network). Unless
        ``last``, types that end the network (``none``, ``gap``) are avoided where others exist."""
        prev, size, fc_count, last_units, sizes = self._state(layers)
        i = len(layers)
        inputs: tuple[int, ...] = (i - 1,) if i else ()
        if self.skips and i:
            inputs = tuple(int(j) for j in np.flatnonzero(rng.random(i) < 0.5))
        for _ in range(2):
            isize = self.input_size(sizes, inputs)
            kinds = self.allowed_types(prev, size, i, fc_count, last_units, isize)
            if not last and any(k not in (NONE, "gap") for k in kinds):
                kinds = [k for k in kinds if k not in (NONE, "gap")]
            elif last and len(kinds) > 1:
                kinds = [k for k in kinds if k != NONE]  # the depth was drawn: fill it
            kind = kinds[int(rng.integers(len(kinds)))]
            if kind == NONE:
                return None
            layer = self.random_layer(kind, rng, isize, last_units)
            if layer is not None:
                return Layer(**{**layer.__dict__, "inputs": inputs if kind in SPATIAL else ((i - 1,) if i else ())})
            inputs = (i - 1,) if i else ()
        return None

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """A valid neighbour: one parameter, one input edge or one layer type changed, or the
        last layer removed or a layer appended (tries random edits until one is valid)."""
        layers = self.layers_of(arch)
        for _ in range(300):
            new = list(layers)
            move = int(rng.integers(5))
            i = int(rng.integers(len(new)))
            if move == 0:  # one parameter of one layer
                params = [p for p, owner in PARAMS.items() if owner == new[i].type and len(self.param_values(p)) > 1]
                if not params:
                    continue
                p = params[int(rng.integers(len(params)))]
                others = [v for v in self.param_values(p) if v != getattr(new[i], p)]
                value = int(others[int(rng.integers(len(others)))])
                pair = {"kernel_h": "kernel_w", "kernel_w": "kernel_h", "stride_h": "stride_w", "stride_w": "stride_h"}
                both = {p: value, pair[p]: value} if self.square and p in pair else {p: value}
                new[i] = Layer(**{**new[i].__dict__, **both})
            elif move == 1:  # one skip edge
                if not self.skips or i == 0 or new[i].type not in SPATIAL:
                    continue
                new[i] = Layer(**{**new[i].__dict__, "inputs": tuple(sorted(set(new[i].inputs) ^ {int(rng.integers(i))}))})
            elif move == 2:  # the type of one layer
                kinds = [t for t in self.types if t != new[i].type]
                if not kinds:
                    continue
                prev, size, _, last_units, sizes = self._state(new[:i])
                fresh = self.random_layer(kinds[int(rng.integers(len(kinds)))], rng,
                                          self.input_size(sizes, new[i].inputs), last_units)
                if fresh is None:
                    continue
                inputs = new[i].inputs if fresh.type in SPATIAL else ((i - 1,) if i else ())
                new[i] = Layer(**{**fresh.__dict__, "inputs": inputs})
            elif move == 3:  # drop the last layer
                if len(new) < 2:
                    continue
                new.pop()
            else:  # append a layer
                try:
                    layer = self._random_next(new, rng)
                except ArchError:
                    continue
                if layer is None:
                    continue
                new.append(layer)
            try:
                candidate = self.arch_of(new)
                self.check_consistency(candidate)
            except ArchError:
                continue
            if candidate != arch:
                return candidate
        return arch

    def describe(self, arch: Arch) -> str:
        parts = []
        for i, layer in enumerate(self.layers_of(arch)):
            text = layer.describe()
            if self.skips and layer.type in SPATIAL and tuple(layer.inputs) != ((i - 1,) if i else ()):
                text += "<-" + ("image" if not layer.inputs else ",".join(str(j) for j in layer.inputs))
            parts.append(text)
        return " > ".join(parts + ["softmax"])

    # --- networks ---------------------------------------------------------------
    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int, **_: Any) -> "LayerNet":
        """The network of ``arch``. The final-training options (``layers``, ``channels``,
        ``auxiliary``) do not apply to this space and are ignored: the arch fixes depth and width."""
        self.validate(arch)
        if tuple(input_shape[1:]) != (self.image_size, self.image_size):
            raise ArchError(f"architecture is for {self.image_size}x{self.image_size} images, the data is "
                            f"{input_shape[1]}x{input_shape[2]}; search with space.image_size={input_shape[1]}")
        return LayerNet(self.layers_of(arch), self.shapes(self.layers_of(arch)), input_shape, num_classes,
                        dropout=self.dropout, batch_norm=self.batch_norm)


def pad_cat(maps: Sequence[Tensor]) -> Tensor:
    """Zero-pad feature maps (bottom/right) to the largest height and width; concatenate channels."""
    if len(maps) == 1:
        return maps[0]
    h = max(m.shape[2] for m in maps)
    w = max(m.shape[3] for m in maps)
    return torch.cat([F.pad(m, (0, w - m.shape[3], 0, h - m.shape[2])) for m in maps], dim=1)


def dropout_rates(layers: Sequence[Layer]) -> list[float]:
    """MetaQNN's dropout after each layer (0: none), as the official code places it
    (bowenbaker/metaqnn libs/grammar/state_string_utils.py ``add_drop_out_states``): over the
    walk's states (the layers, then the termination), one after every second state and after
    each fc, never after gap or the termination, ``n = (states - gaps - fcs) // 2 + fcs`` of
    them in all, the ``i``-th at rate ``i / 2n`` (the paper: "after every two layers ... the
    i-th dropout layer, out of a total n dropout layers, had a dropout probability of i/2n")."""
    fcs = sum(layer.type == "fc" for layer in layers)
    gaps = sum(layer.type == "gap" for layer in layers)
    n = (len(layers) + 1 - gaps - fcs) // 2 + fcs
    out, k = [], 1
    for i, layer in enumerate(layers):
        if ((i + 1) % 2 == 0 or layer.type == "fc") and layer.type != "gap" and k <= n:
            out.append(0.5 * k / n)
            k += 1
        else:
            out.append(0.0)
    return out


class LayerNet(nn.Module):
    """A network of the layer space: conv (+BN+ReLU), max-pool, fc (+ReLU), gap layers and a
    linear classifier over every output that no layer consumes (flattened). ``dropout``:
    MetaQNN's dropout layers (``dropout_rates``); ``batch_norm=False``: convs without BN."""

    def __init__(self, layers: Sequence[Layer], shapes: Sequence[tuple[str, int, int, int]],
                 input_shape: tuple[int, int, int], num_classes: int, dropout: bool = False,
                 batch_norm: bool = True):
        super().__init__()
        rates = dropout_rates(layers) if dropout else [0.0] * len(layers)
        self.specs = list(layers)
        in_c = input_shape[0]
        channels: list[int] = []
        self.ops = nn.ModuleList()
        for i, layer in enumerate(layers):
            c_in = sum(channels[j] for j in layer.inputs) if layer.inputs else in_c
            if layer.type == "conv":
                op: nn.Module = nn.Sequential(
                    nn.Conv2d(c_in, layer.filters, (layer.kernel_h, layer.kernel_w), (layer.stride_h, layer.stride_w),
                              (layer.kernel_h // 2, layer.kernel_w // 2), bias=not batch_norm),
                    *([nn.BatchNorm2d(layer.filters)] if batch_norm else []), nn.ReLU(inplace=True))
                c_out = layer.filters
            elif layer.type == "pool":
                op, c_out = nn.MaxPool2d(layer.pool_kernel, layer.pool_stride, ceil_mode=True), c_in
            elif layer.type == "gap":
                op, c_out = nn.AdaptiveAvgPool2d(1), c_in
            else:  # fc on the flattened previous output
                prev = shapes[i - 1] if i else ("map", in_c, input_shape[1], input_shape[2])
                features = prev[1] if prev[0] == "vec" else channels[i - 1] * prev[2] * prev[3] if i else \
                    in_c * input_shape[1] * input_shape[2]
                op = nn.Sequential(nn.Flatten(), nn.Linear(features, layer.units), nn.ReLU(inplace=True))
                c_out = layer.units
            if rates[i] > 0:
                op = nn.Sequential(op, nn.Dropout(rates[i]))
            self.ops.append(op)
            channels.append(c_out)
        consumed = {j for layer in layers for j in layer.inputs}
        self.sinks = [i for i in range(len(layers)) if i not in consumed]
        maps = [i for i in self.sinks if shapes[i][0] == "map"]
        features = 0
        if maps:
            h = max(shapes[i][2] for i in maps)
            w = max(shapes[i][3] for i in maps)
            features += sum(channels[i] for i in maps) * h * w
        features += sum(channels[i] for i in self.sinks if shapes[i][0] == "vec")
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        outs: list[Tensor] = []
        for layer, op in zip(self.specs, self.ops):
            h = pad_cat([outs[j] for j in layer.inputs]) if layer.inputs else x
            outs.append(op(h))
        maps = [outs[i] for i in self.sinks if outs[i].dim() == 4]
        vecs = [outs[i] for i in self.sinks if outs[i].dim() == 2]
        feats = ([pad_cat(maps).flatten(1)] if maps else []) + vecs
        return self.classifier(torch.cat(feats, dim=1))
