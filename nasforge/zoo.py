"""A model zoo of published architectures, built through nasforge's own spaces.

Every entry names its paper, where its architecture was read from (repository and file),
the parameter count its paper gives (with the tolerance the paper's rounding allows), and
how it is built:

- through a space: the darts space from a genotype (DARTS V1/V2, GDAS), the mbconv space
  with per-stage widths (ProxylessNAS GPU/CPU/mobile), the layers space (MetaQNN, and NAS-RL
  with its skip connections). Building them is also a check of the spaces' fidelity: the
  counts match the papers' networks;
- directly in this module where a space cannot express the network: DenseNAS's derived
  networks choose the op of every block's head layer, which the dense space fixes to an
  MBConv k3 e3. They are built here from the dense space's own stem, tail and classifier and
  the shared MBConv, and recorded as an arch of ``ZooSpace`` (``nasforge.zoo:ZooSpace``, a
  space reference like a user's space), so ``train``, ``export`` and ``load_model`` work on
  them as on any arch.

``nasforge zoo list``, ``nasforge zoo build NAME [--out DIR]`` and ``nasforge train zoo:NAME``
use this module; docs/zoo.md lists the entries, their sources and what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from torch import nn

from nasforge.arch import Arch
from nasforge.errors import ArchError, ConfigError
from nasforge.spaces.base import Choice, SearchSpace, ValueChoice

#: (op, input) pairs per cell, two per node, as in the papers' genotypes.py
Gene = Sequence[tuple[str, int]]
#: the space of the networks built in this module (a module reference, resolved like a user's space)
ZOO_SPACE = "nasforge.zoo:ZooSpace"


# ---------------------------------------------------------------------------
# The architectures, as published
# ---------------------------------------------------------------------------
#: quark0/darts cnn/genotypes.py, DARTS_V1 (first order) and DARTS_V2 (second order)
DARTS_V1 = {
    "normal": [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
               ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
               ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
}
DARTS_V2 = {
    "normal": [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
               ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
               ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
}
#: D-X-Y's GDAS_V1 (lib/nas_infer_model/DXYs/genotypes.py of D-X-Y/AutoDL-Projects): the cell of
#: the GDAS paper, normal and reduction cell both searched
GDAS_V1 = {
    "normal": [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_5x5", 2),
               ("sep_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_5x5", 4), ("sep_conv_3x3", 3)],
    "reduce": [("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
               ("dil_conv_5x5", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
}

#: ProxylessNAS's specialised ImageNet networks (the official net configs proxyless_{gpu,cpu,mobile}.config
#: loaded by mit-han-lab/proxylessnas proxyless_nas/model_zoo.py): first conv, the MBConv1 block,
#: six stages (the search space's 4/4/4/4/4/1 layers, strides 2/2/2/1/2/1), the feature-mix
#: conv; per layer kernel/expansion, or zero where the layer was searched away.
PROXYLESS: dict[str, dict[str, Any]] = {
    "gpu": {"stem": 40, "first": 24, "mix": 1728, "widths": [32, 56, 112, 128, 256, 432], "ops": [
        ["mb_k5_e3", "zero", "zero", "zero"], ["mb_k7_e3", "zero", "zero", "mb_k3_e3"],
        ["mb_k7_e6", "zero", "zero", "mb_k5_e3"], ["mb_k5_e6", "zero", "mb_k3_e3", "mb_k5_e3"],
        ["mb_k7_e6", "mb_k7_e6", "mb_k7_e6", "mb_k5_e6"], ["mb_k7_e6"]]},
    "cpu": {"stem": 40, "first": 24, "mix": 1432, "widths": [32, 48, 88, 104, 216, 360], "ops": [
        ["mb_k3_e6", "mb_k3_e3", "mb_k3_e3", "mb_k3_e3"], ["mb_k3_e6", "mb_k3_e3", "mb_k3_e3", "mb_k5_e3"],
        ["mb_k3_e6", "zero", "zero", "mb_k3_e3"], ["mb_k5_e6", "mb_k3_e3", "mb_k3_e3", "mb_k3_e3"],
        ["mb_k5_e6", "mb_k5_e3", "mb_k5_e3", "mb_k3_e3"], ["mb_k5_e6"]]},
    "mobile": {"stem": 32, "first": 16, "mix": 1280, "widths": [32, 40, 80, 96, 192, 320], "ops": [
        ["mb_k5_e3", "mb_k3_e3", "zero", "zero"], ["mb_k7_e3", "mb_k3_e3", "mb_k5_e3", "mb_k5_e3"],
        ["mb_k7_e6", "mb_k5_e3", "mb_k5_e3", "mb_k5_e3"], ["mb_k5_e6", "mb_k5_e3", "mb_k5_e3", "mb_k5_e3"],
        ["mb_k7_e6", "mb_k7_e6", "mb_k7_e3", "mb_k7_e3"], ["mb_k7_e6"]]},
}
PROXYLESS_DEPTHS = [4, 4, 4, 4, 4, 1]
PROXYLESS_STRIDES = [2, 2, 2, 1, 2, 1]

#: DenseNAS's derived MobileNetV2-space networks in the official net_config form
#: ``[[c_in, c_out], head op, [stacking ops], stride]`` (the last entry's conv1_1 is the tail).
#: C is the net_config of JaminFong/DenseNAS configs/imagenet_train_cfg.py (commit adce6fc);
#: A and B are read from the repository's figure of the three networks (imgs/archs.png), whose
#: row C is exactly that net_config.
DENSENAS: dict[str, list[tuple[tuple[int, int], str, tuple[str, ...], int]]] = {
    "a": [((16, 24), "k3e3", (), 2), ((24, 48), "k7e6", ("k7e3",), 2),
          ((48, 72), "k5e6", ("k3e3", "k5e3"), 2), ((72, 128), "k3e3", ("k3e3",), 1),
          ((128, 176), "k3e3", ("k3e6", "k3e3", "k3e6"), 2), ((176, 384), "k5e6", (), 1)],
    "b": [((16, 24), "k3e6", (), 2), ((24, 48), "k5e3", ("k3e3", "k3e3"), 2),
          ((48, 72), "k3e6", ("k3e3", "k5e3"), 2), ((72, 128), "k3e6", ("k3e3",), 1),
          ((128, 160), "k3e6", ("k3e3", "k5e6", "k5e3"), 2), ((160, 176), "k3e3", ("k3e6", "k3e6"), 1),
          ((176, 384), "k7e6", (), 1)],
    "c": [((16, 24), "k3e6", (), 2), ((24, 48), "k7e6", ("k3e3",), 2),
          ((48, 72), "k5e6", ("k3e6", "k3e3"), 2), ((72, 128), "k3e6", ("k3e3", "k3e3"), 1),
          ((128, 160), "k3e6", ("k7e3", "k5e6", "k7e3"), 2), ((160, 176), "k3e3", ("k3e6", "k3e6", "k3e6"), 1),
          ((176, 384), "k7e6", (), 1)],
}
DENSENAS_STEM, DENSENAS_LAST = 16, 1984

#: MetaQNN's best CIFAR-10 network (Baker et al. 2017, appendix Table A2, 6.92% error, 11.26M
#: params): C(filters, receptive field, stride), P(receptive field, stride), then softmax.
METAQNN_CIFAR10 = [("C", 512, 5, 1), ("C", 256, 3, 1), ("C", 256, 5, 1), ("C", 256, 3, 1), ("P", 5, 3),
                   ("C", 512, 3, 1), ("C", 512, 5, 1), ("P", 2, 2)]
#: NAS-RL's CIFAR-10 network without strides or pooling (Zoph & Le 2017, Table 1: 15 layers, 4.2M params,
#: 5.50% error; appendix A, Figure 7): per layer (filter height, filter width, filters) and the layers it
#: reads (0: the image; several inputs are concatenated in depth), then global pooling and softmax.
#: Read from the figure's vector drawing (every arrow's end points, mapped to the layer boxes).
NASRL_LAYERS = [(3, 3, 36), (3, 3, 48), (3, 3, 36), (5, 5, 36), (3, 7, 48), (7, 7, 48), (7, 7, 48), (7, 3, 36),
                (7, 1, 36), (7, 7, 36), (5, 7, 36), (7, 7, 48), (7, 5, 48), (7, 5, 48), (7, 5, 48)]
NASRL_INPUTS = [[0], [1], [1, 2], [1, 2, 3], [3, 4], [2, 3, 4, 5], [2, 3, 4, 5, 6], [1, 6, 7], [1, 5, 6, 8],
                [1, 3, 4, 5, 6, 7, 8, 9], [1, 2, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 6, 11],
                [1, 3, 6, 7, 8, 9, 10, 11, 12], [3, 7, 12, 13], [2, 7, 11, 12, 13, 14]]
#: NAS-RL's search space (filter heights/widths 1/3/5/7, filters 24/36/48/64, stride 1, skips)
NASRL_SPACE = {"image_size": 32, "max_depth": 16, "types": "conv,gap", "kernel_sizes": "1,3,5,7", "strides": "1",
               "filters": "24,36,48,64", "skips": 1}
#: MetaQNN's CIFAR-10 state space (paper Table 1): filters, receptive fields, pooling pairs, fc units
METAQNN_SPACE = {"image_size": 32, "max_depth": 12, "types": "conv,pool,fc,gap", "kernel_sizes": "1,3,5",
                 "strides": "1", "filters": "64,128,256,512", "pool_kernels": "2,3,5", "pool_strides": "2,3",
                 "fc_units": "128,256,512", "max_fc": 2, "fc_max_size": 8, "skips": 0}


# ---------------------------------------------------------------------------
# Entries
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ZooEntry:
    """One published network: where it comes from, how nasforge builds it, what its paper reports."""

    name: str
    title: str
    paper: str
    source: str
    space: str  #: the nasforge space of its arch (``ZOO_SPACE`` for networks built in this module)
    how: str  #: how it is built (which space and options, or why directly)
    input_shape: tuple[int, int, int]  #: the paper's input (CIFAR-10 32x32 or ImageNet 224x224)
    num_classes: int
    paper_params: int | None  #: as the paper prints it (e.g. 3_300_000 for "3.3M"), None when not given
    params_tolerance: int  #: allowed |built - paper_params|, from the paper's rounding (see ``note``)
    note: str
    make_arch: Callable[[tuple[int, int, int]], Arch] = field(repr=False, compare=False)
    build_options: dict[str, Any] = field(default_factory=dict)  #: e.g. darts layers/channels
    paper_macs: int | None = None  #: multiply-adds at ``input_shape`` the paper gives ("FLOPs")
    macs_tolerance: int = 0

    def arch(self, input_shape: Sequence[int] | None = None) -> Arch:
        """The arch of the network (``input_shape``: the data it will see, for spaces whose archs record it)."""
        return self.make_arch(tuple(input_shape) if input_shape is not None else self.input_shape)

    def space_options(self, arch: Arch) -> dict[str, Any]:
        """The space options that rebuild ``arch`` (``make_space(space, **options)``)."""
        return _space_options(arch)

    def build(self, input_shape: Sequence[int] | None = None, num_classes: int | None = None) -> nn.Module:
        """The network at ``input_shape`` / ``num_classes`` (default: the paper's)."""
        from nasforge.spaces import get_space_class

        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        arch = self.arch(shape)
        space = get_space_class(arch.space).for_arch(arch)
        return space.build(arch, shape, num_classes or self.num_classes, **self.build_options)


def _darts_arch(genotype: dict[str, Gene]) -> Callable[[tuple[int, int, int]], Arch]:
    def make(_shape: tuple[int, int, int]) -> Arch:
        from nasforge.spaces.darts import DartsSpace, Genotype

        return DartsSpace().arch_from_genotype(Genotype(tuple(map(tuple, genotype["normal"])),
                                                        tuple(map(tuple, genotype["reduce"]))))

    return make


def _proxyless_space(kind: str):
    from nasforge.spaces.mbconv import MBConvSpace

    cfg = PROXYLESS[kind]
    return MBConvSpace(stem=cfg["stem"], stem_stride=2, first=cfg["first"], widths=cfg["widths"],
                       depths=PROXYLESS_DEPTHS, strides=PROXYLESS_STRIDES, mix=cfg["mix"])


def _proxyless_arch(kind: str) -> Callable[[tuple[int, int, int]], Arch]:
    def make(_shape: tuple[int, int, int]) -> Arch:
        ops = {f"stage{i}.layer{j}": op for i, stage in enumerate(PROXYLESS[kind]["ops"]) for j, op in enumerate(stage)}
        return _proxyless_space(kind).shape_arch(ops)

    return make


def _metaqnn_arch(shape: tuple[int, int, int]) -> Arch:
    from nasforge.spaces.layers import Layer, LayerSpace

    if shape[1] != shape[2]:
        raise ArchError(f"MetaQNN's network needs square images, the data is {shape[1]}x{shape[2]}")
    space = LayerSpace(**{**METAQNN_SPACE, "image_size": int(shape[1])})
    layers = []
    for item in METAQNN_CIFAR10:
        if item[0] == "C":
            _, filters, kernel, stride = item
            layers.append(Layer("conv", kernel_h=kernel, kernel_w=kernel, stride_h=stride, stride_w=stride,
                                filters=filters))
        else:
            _, kernel, stride = item
            layers.append(Layer("pool", pool_kernel=kernel, pool_stride=stride))
    return space.arch_of(space.chain(layers))


def _nasrl_arch(shape: tuple[int, int, int]) -> Arch:
    from nasforge.spaces.layers import Layer, LayerSpace

    if shape[1] != shape[2]:
        raise ArchError(f"NAS-RL's network needs square images, the data is {shape[1]}x{shape[2]}")
    space = LayerSpace(**{**NASRL_SPACE, "image_size": int(shape[1])})
    layers = [Layer("conv", kernel_h=fh, kernel_w=fw, filters=n, inputs=tuple(j - 1 for j in reads if j))
              for (fh, fw, n), reads in zip(NASRL_LAYERS, NASRL_INPUTS)]
    layers.append(Layer("gap", inputs=(len(layers) - 1,)))
    return space.arch_of(layers)


def _zoo_arch(name: str) -> Callable[[tuple[int, int, int]], Arch]:
    return lambda _shape: Arch(ZOO_SPACE, {"network": name}, ZooSpace.version)


def _space_options(arch: Arch) -> dict[str, Any]:
    """Options of ``arch.space`` under which ``make_space`` gives the space of ``arch``."""
    values = arch.as_dict()
    if arch.space == "mbconv":
        stages = sum(1 for k in values if k.startswith("stage") and k.endswith(".width"))
        return {"stem": values["stem.width"], "stem_stride": values["stem.stride"], "first": values["first.width"],
                "mix": values["mix.width"], "widths": [values[f"stage{i}.width"] for i in range(stages)],
                "depths": [values[f"stage{i}.depth"] for i in range(stages)],
                "strides": [values[f"stage{i}.stride"] for i in range(stages)]}
    if arch.space == "layers":
        return {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("space.")}
    return {}


_DARTS_HOW = ("darts space from the genotype (arch_from_genotype), the paper's CIFAR-10 network: 20 cells, "
              "36 initial channels, no auxiliary head")
_PROXYLESS_HOW = ("mbconv space with the config's stage widths (stem {stem} stride 2, MBConv1 {first}, stages "
                  "{widths} of depth 4/4/4/4/4/1, strides 2/2/2/1/2/1, feature mix {mix}); per layer the config's "
                  "MBConv or zero")
_DENSENAS_HOW = ("built in nasforge/zoo.py (ZooSpace): the dense space fixes every block's head layer to MBConv "
                 "k3 e3, these networks choose it per block; stem, tail and classifier are the dense space's, the "
                 "blocks its MBConv")
_PROXYLESS_SOURCE = ("mit-han-lab/proxylessnas proxyless_nas/model_zoo.py (net config proxyless_{kind}.config); "
                     "totals in logs/imagenet_{kind}_log.txt")
_PROXYLESS_PAPER = ("Cai, Zhu & Han, ProxylessNAS: Direct Neural Architecture Search on Target Task and Hardware, "
                    "ICLR 2019")
_DENSENAS_PAPER = ("Fang et al., Densely Connected Search Space for More Flexible Neural Architecture Search, "
                   "CVPR 2020")

ENTRIES: dict[str, ZooEntry] = {}


def _add(entry: ZooEntry) -> None:
    ENTRIES[entry.name] = entry


_add(ZooEntry(
    "darts-v1", "DARTS (first order), CIFAR-10",
    "Liu, Simonyan & Yang, DARTS: Differentiable Architecture Search, ICLR 2019 (Table 1: 3.3M params)",
    "quark0/darts cnn/genotypes.py, DARTS_V1", "darts", _DARTS_HOW, (3, 32, 32), 10,
    3_300_000, 140_000, "paper gives 3.3M, but the released DARTS_V1 genotype builds 3,169,414 params in the "
    "official model.py layout (the one that gives DARTS_V2 exactly 3,349,342): compared within 0.14M, not the "
    "paper's rounding",
    _darts_arch(DARTS_V1), {"layers": 20, "channels": 36, "auxiliary": False}))
_add(ZooEntry(
    "darts-v2", "DARTS (second order), CIFAR-10",
    "Liu, Simonyan & Yang, DARTS: Differentiable Architecture Search, ICLR 2019 (Table 1: 3.3M params)",
    "quark0/darts cnn/genotypes.py, DARTS_V2 (= DARTS)", "darts", _DARTS_HOW, (3, 32, 32), 10,
    3_349_342, 0, "exact: 3,349,342 is the count of the official model.py network (paper: 3.3M)",
    _darts_arch(DARTS_V2), {"layers": 20, "channels": 36, "auxiliary": False}, paper_macs=None))
_add(ZooEntry(
    "gdas", "GDAS, CIFAR-10 (searched normal and reduction cells)",
    "Dong & Yang, Searching for A Robust Neural Architecture in Four GPU Hours, CVPR 2019 (Table 1: 3.4M params)",
    "D-X-Y/AutoDL-Projects lib/nas_infer_model/DXYs/genotypes.py, GDAS_V1", "darts", _DARTS_HOW, (3, 32, 32), 10,
    3_400_000, 50_000, "paper gives 3.4M: compared within its rounding (+-0.05M); the official network is the "
    "DARTS layout (NASNetonCIFAR, C=36, N=6: 20 cells)",
    _darts_arch(GDAS_V1), {"layers": 20, "channels": 36, "auxiliary": False}))
for _kind, _exact, _paper, _macs in (("gpu", 7_119_848, "7.1M", 465_300_000), ("cpu", 4_361_648, "4.4M", 439_200_000),
                                     ("mobile", 4_080_512, "4.1M", 320_400_000)):
    _add(ZooEntry(
        f"proxylessnas-{_kind}", f"ProxylessNAS ({_kind.upper() if _kind != 'mobile' else 'mobile'}), ImageNet",
        f"{_PROXYLESS_PAPER} (Table: {_paper} params)", _PROXYLESS_SOURCE.format(kind=_kind), "mbconv",
        _PROXYLESS_HOW.format(**PROXYLESS[_kind]), (3, 224, 224), 1000, _exact, 0,
        f"exact: {_exact:,} is the network of the official config (its training log prints "
        f"{_exact / 1e6:.2f}M; paper {_paper}); MACs within the log's rounding (+-0.05M)",
        _proxyless_arch(_kind), paper_macs=_macs, macs_tolerance=50_000))
for _kind, _macs in (("a", 251_000_000), ("b", 314_000_000), ("c", 361_000_000)):
    _add(ZooEntry(
        f"densenas-{_kind}", f"DenseNAS-{_kind.upper()}, ImageNet",
        f"{_DENSENAS_PAPER} (Table 2: {_macs // 1_000_000}M FLOPs; no parameter count published)",
        "JaminFong/DenseNAS " + ("configs/imagenet_train_cfg.py net_config (commit adce6fc) and imgs/archs.png"
                                 if _kind == "c" else "imgs/archs.png (row C of the figure is the net_config "
                                 "of configs/imagenet_train_cfg.py)"),
        ZOO_SPACE, _DENSENAS_HOW, (3, 224, 224), 1000, None, 0,
        "the paper gives FLOPs (multiply-adds) only: compared within their rounding (+-0.5M)",
        _zoo_arch(f"densenas-{_kind}"), paper_macs=_macs, macs_tolerance=500_000))
_add(ZooEntry(
    "metaqnn-cifar10", "MetaQNN's best CIFAR-10 network",
    "Baker, Gupta, Naik & Raskar, Designing Neural Network Architectures using Reinforcement Learning, "
    "ICLR 2017 (appendix Table A2: 6.92% error, 11.26M params)",
    "the paper's Table A2 (static/baker_et_al_reinforcement_networks_iclr_final.pdf of bowenbaker/metaqnn); "
    "layer conventions from the official Caffe prototxts (same-padded convs, ceil-mode max pooling)",
    "layers", "layers space (MetaQNN's CIFAR-10 state space: filters 64-512, receptive fields 1/3/5, pooling "
    "(5,3)/(3,2)/(2,2)): 6 convs and 2 max-pools in a chain, then the softmax classifier", (3, 32, 32), 10,
    11_260_000, 60_000, "paper gives 11.26M; the network built with the official Caffe layer rules has "
    "11.31M (11,309,834 with conv biases; the layers space's conv+BN adds 2,304): no convention reproduces all "
    "five Table A2 counts, so compared within 0.6%",
    _metaqnn_arch))

_add(ZooEntry(
    "nasrl-cifar10", "NAS-RL's CIFAR-10 network (15 layers, no strides or pooling)",
    "Zoph & Le, Neural Architecture Search with Reinforcement Learning, ICLR 2017 (Table 1: 15 layers, 4.2M "
    "params, 5.50% error; the network is appendix A, Figure 7)",
    "the paper's appendix Figure 7 (filter heights, widths and counts of its boxes; the skip connections from the "
    "end points of its arrows in the PDF's vector drawing)",
    "layers", "layers space with skips (NAS-RL's search space: filter heights/widths 1/3/5/7, filters "
    "24/36/48/64, stride 1): 15 convs, each reading the concatenation of its inputs, then global average "
    "pooling and the softmax classifier", (3, 32, 32), 10,
    4_200_000, 50_000, "paper gives 4.2M: compared within its rounding (+-0.05M); the count needs the global "
    "pooling before the softmax (a classifier on the flattened 32x32 map would add 0.49M)",
    _nasrl_arch))

#: left out, and why (docs/zoo.md)
LEFT_OUT = {
    "darts-plus": "DARTS+ (Liang et al. 2019): its cells are published only as figures, not as a genotype in text, "
                  "and there is no official code",
}


def names() -> list[str]:
    return list(ENTRIES)


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name`` (``ConfigError`` listing the names otherwise)."""
    entry = ENTRIES.get(str(name).strip().lower())
    if entry is None:
        raise ConfigError(f"unknown zoo network '{name}'; choose one of {names()} (nasforge zoo list)")
    return entry


# ---------------------------------------------------------------------------
# DenseNAS networks, built directly
# ---------------------------------------------------------------------------
def _mb(c_in: int, c_out: int, op: str, stride: int) -> nn.Module:
    from nasforge.spaces.ops import MBConv

    kernel, expansion = int(op[1]), int(op[3])
    return MBConv(c_in, c_out, kernel, stride, expansion, shortcut=True)


def densenas_network(kind: str, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """DenseNAS-A/B/C: the dense space's stem (3x3 conv stride 2 to 16, MBConv k3 e1), the derived
    blocks (head MBConv with the block's stride, then the stacking MBConvs), the tail conv to 1984
    channels, pooling and the classifier."""
    from nasforge.spaces.dense import Classifier, DenseNetwork, Stem, TailConv

    blocks = [nn.Sequential(_mb(c_in, c_out, head, stride), *(_mb(c_out, c_out, op, 1) for op in stack))
              for (c_in, c_out), head, stack, stride in DENSENAS[kind]]
    last_block = DENSENAS[kind][-1][0][1]
    return DenseNetwork(Stem(input_shape[0], DENSENAS_STEM, 2), blocks, TailConv(last_block, DENSENAS_LAST),
                        Classifier(DENSENAS_LAST, num_classes))


_DIRECT: dict[str, Callable[[Sequence[int], int], nn.Module]] = {
    f"densenas-{k}": (lambda shape, classes, k=k: densenas_network(k, shape, classes)) for k in DENSENAS
}


class ZooSpace(SearchSpace):
    """The zoo's networks that no space of nasforge expresses, as a space of one choice (``network``).

    Not registered (it is nothing to search); archs name it as ``nasforge.zoo:ZooSpace``, a module
    reference, which ``get_space_class`` resolves like a user's space.
    """

    name = ZOO_SPACE
    version = 1
    description = "networks of the model zoo built directly (nasforge zoo list)"

    def choices(self) -> dict[str, Choice]:
        return {"network": ValueChoice("network", tuple(_DIRECT))}

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int, **_: Any) -> nn.Module:
        """The network of ``arch`` (the final-training options layers/channels/auxiliary do not apply)."""
        self.validate(arch)
        return _DIRECT[arch["network"]](input_shape, num_classes)

    def describe(self, arch: Arch) -> str:
        name = arch["network"]
        if name.startswith("densenas-"):
            parts = [f"stem {DENSENAS_STEM}"]
            for (_, c_out), head, stack, stride in DENSENAS[name.split("-", 1)[1]]:
                parts.append(f"{c_out}{'/2' if stride == 2 else ''}[{','.join((head,) + stack)}]")
            return " > ".join(parts + [f"tail {DENSENAS_LAST}"])
        return f"zoo network {name}"



# ---------------------------------------------------------------------------
# Summaries and training
# ---------------------------------------------------------------------------
def summary(name: str, input_shape: Sequence[int] | None = None, num_classes: int | None = None) -> dict[str, Any]:
    """Params and FLOPs of an entry's network (at its paper's input unless given), with its sources."""
    from nasforge.hardware import count_flops
    from nasforge.spaces import get_space_class

    entry = get_entry(name)
    shape = tuple(input_shape) if input_shape is not None else entry.input_shape
    classes = num_classes or entry.num_classes
    arch = entry.arch(shape)
    model = entry.build(shape, classes)
    flops = count_flops(model, shape)
    space = get_space_class(arch.space).for_arch(arch)
    return {"name": entry.name, "title": entry.title, "paper": entry.paper, "source": entry.source,
            "space": entry.space, "how": entry.how, "input_shape": list(shape), "num_classes": classes,
            "params": sum(p.numel() for p in model.parameters()), "flops": flops, "macs": flops // 2,
            "paper_params": entry.paper_params, "params_tolerance": entry.params_tolerance,
            "paper_macs": entry.paper_macs, "note": entry.note, "build_options": dict(entry.build_options),
            "arch_summary": space.describe(arch), "arch": arch}


def train_overrides(entry: ZooEntry, arch: Arch) -> list[tuple[list[str], Any]]:
    """Config overrides that make ``nasforge train`` build ``entry``'s network: the space options of its
    arch and, for cell networks, the paper's depth and width (a later ``--set`` still wins)."""
    out: list[tuple[list[str], Any]] = [(["space", key], value) for key, value in entry.space_options(arch).items()]
    for key in ("layers", "channels"):
        if key in entry.build_options:
            out.append((["train", key], entry.build_options[key]))
    return out


def fit_to_data(entry: ZooEntry, cfg: Any, input_shape: Sequence[int]) -> Arch:
    """The arch of ``entry`` for data of ``input_shape``, with ``cfg.space`` set to the options that
    build it (a layers-space arch records its image size: MetaQNN's network trains on 8x8 digits too)."""
    from nasforge.spaces import make_space

    arch = entry.arch(input_shape)
    options = entry.space_options(arch)
    if options:
        cfg.space.update(options)
        make_space(cfg.space["name"], **{k: v for k, v in cfg.space.items() if k != "name"}).validate(arch)
    return arch


def write_build(name: str, out_dir: Any, force: bool = False) -> dict[str, Any]:
    """``nasforge zoo build NAME --out DIR``: DIR/arch.json (the network's arch) and DIR/zoo.json (its
    summary: params, FLOPs, sources, the paper's count). An existing arch.json is kept unless ``force``."""
    import json
    from pathlib import Path

    from nasforge.errors import ExperimentError
    from nasforge.utils import atomic_write_text

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"--out {out} is a file; pass a directory")
    if (out / "arch.json").exists() and not force:
        raise ExperimentError(f"{out / 'arch.json'} exists; pass --force to overwrite it or choose another --out")
    info = summary(name)
    out.mkdir(parents=True, exist_ok=True)
    info["arch"].save(out / "arch.json")
    record = {k: v for k, v in info.items() if k != "arch"}
    atomic_write_text(out / "zoo.json", json.dumps(record, indent=2) + "\n")
    return info
