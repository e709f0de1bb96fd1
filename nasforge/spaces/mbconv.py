"""The MBConv layer-wise search space of ProxylessNAS (Cai, Zhu & Han, ICLR 2019).

A network is a stem convolution (3x3, BN, ReLU6), an optional MBConv1 block, then stages
of layers, an optional 1x1 feature-mix convolution (BN, ReLU6), global average pooling
and a linear classifier. Every layer of a stage is searched: it picks one of six
inverted-residual blocks (MBConv, kernel 3/5/7, expansion 3/6; named ``mb_k3_e3`` ...
``mb_k7_e6``) or ``zero`` (the layer is skipped and its input passes through). ``zero`` is
offered wherever the layer keeps the shape (stride 1, same width), i.e. everywhere but a
stage's first layer when that one strides or changes the width.

MBConv follows the paper's code: a 1x1 expansion conv (left out for expansion 1) + BN +
ReLU6, a depthwise kxk conv (stride on it) + BN + ReLU6, a 1x1 projection + BN, and the
input added back when the layer keeps the shape.

Shape options (``preset``, overridden one by one by ``stem``, ``stem_stride``, ``first``,
``widths``, ``depths``, ``strides``, ``mix``) are recorded in every ``Arch`` as single-valued
choices (``stem.width``, ``stage0.width``, ``stage0.depth``, ``stage0.stride``, ...), so an
arch.json rebuilds its network alone. Presets: ``small`` (default, for 8x8 digits: stem
16 stride 1, MBConv1 16, stages 16/32 of depth 3/3, strides 1/2, no feature mix),
``cifar`` (the same with a stride-2 stem, for 32x32 on a CPU) and ``imagenet`` (the
paper's mobile setting: stem 32 stride 2, MBConv1 16, stages 24/40/80/96/192/320 of depth
4/4/4/4/4/1, strides 2/2/2/1/2/1, feature mix 1280). The small presets have a single
stage transition because a searched layer without shortcut hands the next layer a
different feature basis for every sampled op, which a single-path supernet on small data
learns to reconcile only slowly (docs/proxyless.md).

Arch choices: ``stage{i}.layer{j}`` (the op of layer j of stage i) plus the shape choices.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.nn.choices import OpChoice, Zero
from nasforge.spaces.base import Choice, OpChoice as OpDecl, ValueChoice, register_space
from nasforge.spaces.modular import ModuleSpace
from nasforge.spaces.ops import MBConv

#: The paper's candidate blocks (``conv_candidates`` of its search script), then ``zero``.
MB_OPS: tuple[str, ...] = ("mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6")
ZERO = "zero"
LARGEST_OP = "mb_k7_e6"

PRESETS: dict[str, dict[str, Any]] = {
    "small": {"stem": 16, "stem_stride": 1, "first": 16, "widths": [16, 32], "depths": [3, 3],
              "strides": [1, 2], "mix": 0},
    "cifar": {"stem": 16, "stem_stride": 2, "first": 16, "widths": [16, 32], "depths": [3, 3],
              "strides": [1, 2], "mix": 0},
    "imagenet": {"stem": 32, "stem_stride": 2, "first": 16, "widths": [24, 40, 80, 96, 192, 320],
                 "depths": [4, 4, 4, 4, 4, 1], "strides": [2, 2, 2, 1, 2, 1], "mix": 1280},
}
_SHAPE_KEYS = ("stem", "stem_stride", "first", "mix")


def op_spec(name: str) -> tuple[int, int]:
    """(kernel, expansion) of an MBConv op name like ``mb_k5_e6``."""
    try:
        _, k, e = name.split("_")
        return int(k[1:]), int(e[1:])
    except ValueError:
        raise ArchError(f"'{name}' is not an MBConv op; use one of {list(MB_OPS)} or '{ZERO}'") from None


def _out_size(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded odd-kernel conv with ``stride`` (any odd kernel)."""
    return (size - 1) // stride + 1


class MBLayer(nn.Module):
    """One layer of a stage: an op and, where the shape is kept, the identity shortcut."""

    def __init__(self, op: nn.Module, residual: bool):
        super().__init__()
        self.op = op
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.op(x)
        return x + out if self.residual else out


def conv_bn_relu6(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class Head(nn.Module):
    """Global average pooling and the linear classifier."""

    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x.mean((2, 3)))


class LayerSpec:
    """Where one searchable layer sits: its label, widths, stride, input shape and candidate ops."""

    def __init__(self, label: str, c_in: int, c_out: int, stride: int, in_hw: tuple[int, int], ops: tuple[str, ...]):
        self.label, self.c_in, self.c_out, self.stride, self.in_hw, self.ops = label, c_in, c_out, stride, in_hw, ops

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.c_in == self.c_out

    def make_op(self, op: str) -> nn.Module:
        """The candidate ``op`` of this layer (``zero``: a ``Zero``), without the shortcut."""
        if op == ZERO:
            return Zero()
        kernel, expansion = op_spec(op)
        return MBConv(self.c_in, self.c_out, kernel, self.stride, expansion)


class MBConvNet(nn.Module):
    """The network of the space, written once: stem, [MBConv1], the searchable layers (each an
    ``OpChoice`` over its MBConv ops and, where the shape is kept, ``zero``), [feature mix], head.
    Built from an arch, a layer whose op is ``zero`` is left out (its input passes through)."""

    def __init__(self, space: "MBConvSpace", input_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        c = input_shape[0]
        specs = space.layer_specs(input_shape)
        # the fixed parts first, then the layers (the order the parameters are drawn in)
        self.stem = conv_bn_relu6(c, space.stem, 3, space.stem_stride)
        self.first = MBConv(space.stem, space.first, 3, 1, 1) if space.first else nn.Identity()
        c_last = space.widths[-1]
        self.mix = conv_bn_relu6(c_last, space.mix, 1) if space.mix else nn.Identity()
        self.head = Head(space.mix or c_last, num_classes)
        layers = []
        for spec in specs:
            op = OpChoice(spec.label, {name: (lambda name=name, spec=spec: spec.make_op(name)) for name in spec.ops})
            if not isinstance(op, Zero):
                layers.append(MBLayer(op, spec.residual))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.mix(self.layers(self.first(self.stem(x)))))


def _int_list(name: str, value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"space option '{name}' must be a non-empty list of integers, got {value!r}")
    return list(value)


@register_space
class MBConvSpace(ModuleSpace):
    """ProxylessNAS's layer-wise MBConv space: per layer one of six MBConv blocks or zero."""

    name = "mbconv"
    version = 1
    description = ("ProxylessNAS MBConv layers: kernel 3/5/7 x expansion 3/6 or zero per layer "
                   "(presets small, cifar, imagenet)")

    def __init__(self, preset: str = "small", stem: int | None = None, stem_stride: int | None = None,
                 first: int | None = None, widths: Sequence[int] | None = None, depths: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None, mix: int | None = None):
        if preset not in PRESETS:
            raise ConfigError(f"space option preset={preset!r} is unknown; use one of {list(PRESETS)}")
        base = PRESETS[preset]
        self.preset = preset
        given = {"stem": stem, "stem_stride": stem_stride, "first": first, "mix": mix}
        for key in _SHAPE_KEYS:
            value = base[key] if given[key] is None else given[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"space option '{key}' must be an integer, got {value!r}")
            setattr(self, key, value)
        self.widths = _int_list("widths", base["widths"] if widths is None else widths)
        self.depths = _int_list("depths", base["depths"] if depths is None else depths)
        self.strides = _int_list("strides", base["strides"] if strides is None else strides)
        if not len(self.widths) == len(self.depths) == len(self.strides):
            raise ConfigError(f"space options widths, depths and strides need one value per stage; got "
                              f"{len(self.widths)}, {len(self.depths)} and {len(self.strides)} values")
        for key, values, lo in (("widths", self.widths, 1), ("depths", self.depths, 1), ("strides", self.strides, 1)):
            if min(values) < lo:
                raise ConfigError(f"space option {key}={values} must hold values >= {lo}")
        if max(self.strides) > 2 or self.stem_stride not in (1, 2):
            raise ConfigError("space strides must be 1 or 2; fix strides / stem_stride")
        if self.stem < 1 or self.first < 0 or self.mix < 0:
            raise ConfigError("space option stem must be >= 1, first and mix >= 0 (0 leaves the block out)")

    # --- declarations --------------------------------------------------------
    def _shape_choices(self) -> dict[str, Choice]:
        out: dict[str, Choice] = {
            "stem.width": ValueChoice("stem.width", (self.stem,)),
            "stem.stride": ValueChoice("stem.stride", (self.stem_stride,)),
            "first.width": ValueChoice("first.width", (self.first,)),
            "mix.width": ValueChoice("mix.width", (self.mix,)),
        }
        for i, (w, d, s) in enumerate(zip(self.widths, self.depths, self.strides)):
            for key, value in (("width", w), ("depth", d), ("stride", s)):
                out[f"stage{i}.{key}"] = ValueChoice(f"stage{i}.{key}", (value,))
        return out

    def layer_specs(self, input_shape: tuple[int, int, int] = (3, 32, 32)) -> list[LayerSpec]:
        """The searchable layers in order, with their input shapes for ``input_shape``."""
        _, h, w = input_shape
        h, w = _out_size(h, self.stem_stride), _out_size(w, self.stem_stride)
        c = self.first or self.stem
        specs = []
        for i, (width, depth, stride) in enumerate(zip(self.widths, self.depths, self.strides)):
            for j in range(depth):
                s = stride if j == 0 else 1
                ops = MB_OPS + ((ZERO,) if s == 1 and c == width else ())
                specs.append(LayerSpec(f"stage{i}.layer{j}", c, width, s, (h, w), ops))
                h, w, c = _out_size(h, s), _out_size(w, s), width
        return specs

    def choices(self) -> dict[str, Choice]:
        ops = {s.label: OpDecl(s.label, s.ops) for s in self.layer_specs()}
        return {**ops, **self._shape_choices()}

    @classmethod
    def for_arch(cls, arch: Arch) -> "MBConvSpace":
        """The space whose shape options are those recorded in ``arch``."""
        given = arch.as_dict()

        def value(label: str) -> Any:
            if label not in given:
                raise ArchError(f"choice '{label}' is missing from the architecture; add it (an mbconv arch "
                                "records its shape options)")
            return given[label]

        stages = 0
        while f"stage{stages}.width" in given:
            stages += 1
        if stages == 0:
            raise ArchError("choice 'stage0.width' is missing from the architecture; an mbconv arch records "
                            "stage{i}.width/.depth/.stride for every stage")
        try:
            return cls(preset="small", stem=value("stem.width"), stem_stride=value("stem.stride"),
                       first=value("first.width"), mix=value("mix.width"),
                       widths=[value(f"stage{i}.width") for i in range(stages)],
                       depths=[value(f"stage{i}.depth") for i in range(stages)],
                       strides=[value(f"stage{i}.stride") for i in range(stages)])
        except ConfigError as exc:
            raise ArchError(f"the architecture's shape choices are invalid ({exc}); fix them") from None

    def shape_arch(self, ops: dict[str, str]) -> Arch:
        """An ``Arch`` from per-layer ops (label -> op) plus this space's shape choices."""
        values = {label: c.values[0] for label, c in self._shape_choices().items()}
        return Arch(self.name, {**values, **ops}, self.version)

    def uniform_arch(self, op: str) -> Arch:
        """Every layer set to ``op``; for ``zero``, layers that cannot be skipped get the smallest MBConv."""
        return self.shape_arch({s.label: op if op in s.ops else MB_OPS[0] for s in self.layer_specs()})

    def describe(self, arch: Arch) -> str:
        stages: dict[str, list[str]] = {}
        for s in self.layer_specs():
            stages.setdefault(s.label.split(".")[0], []).append(str(arch[s.label]))
        return " | ".join(f"{k}: {' '.join(v)}" for k, v in stages.items())

    # --- networks --------------------------------------------------------------
    def fixed_choices(self) -> dict[str, Choice]:
        return self._shape_choices()

    def network(self, input_shape: tuple[int, int, int], num_classes: int) -> MBConvNet:
        """The network with an ``OpChoice`` per searchable layer (inside ``fixed_arch``: the arch's
        network). The final-training options (layers, channels, auxiliary) do not apply."""
        return MBConvNet(self, tuple(input_shape), num_classes)
