"""Fake-quant wrappers for every ``nn.Conv2d`` / ``nn.Linear`` of any model, calibration and size.

``wrap_model(model)`` returns a copy of the model in which each conv/linear layer is a
``QuantLayer``: the original layer (its weights are still the trainable parameters) plus
a weight and an input-activation bit width and clipping thresholds. The forward pass
quantizes the layer's input and weight (``fake_quantize``, straight-through gradient)
and runs the original op, so fine-tuning works with any optimiser. ``calibrate`` keeps
a sample of each layer's float inputs; thresholds for any bit width then come from that
sample (memoised), so switching policies during a search costs no pass.

Two weight quantizers: ``linear`` (clip to a threshold, round to a uniform grid; the
threshold by MSE or, as the HAQ code, by KL: ``set_clip``) and ``kmeans`` (HAQ's
quantization for size budgets: the weights of a layer share ``2**wbits`` values, the means
of k-means clusters; ``set_quantizer``). Under k-means the cluster of each weight is fixed
when the bits are set, and the forward pass uses each cluster's mean of the current
weights, so fine-tuning moves the shared values (the HAQ code's ``kmeans_update_model``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasforge.errors import ConfigError
from nasforge.hardware.accelerators import LayerInfo
from nasforge.quant.linear import CLIP_METHODS, FLOAT_BITS, check_bits, fake_quantize, kmeans_1d, threshold

__all__ = [
    "QuantLayer",
    "calibrate",
    "layer_infos",
    "quant_layers",
    "quantized_size_bytes",
    "set_clip",
    "set_policy",
    "set_quantizer",
    "wrap_model",
]

QUANTIZABLE = (nn.Conv2d, nn.Linear)
#: weight quantizers: ``linear`` (uniform grid) and ``kmeans`` (shared values, HAQ's size-budget quantizer)
QUANTIZERS = ("linear", "kmeans")


class QuantLayer(nn.Module):
    """A conv or linear layer whose input and weight are fake-quantized to ``abits`` / ``wbits``."""

    def __init__(self, layer: nn.Module, wbits: int = FLOAT_BITS, abits: int = FLOAT_BITS, samples: int = 20000):
        super().__init__()
        if not isinstance(layer, QUANTIZABLE):
            raise TypeError(f"QuantLayer wraps nn.Conv2d or nn.Linear, got {type(layer).__name__}")
        self.layer = layer
        self.wbits, self.abits = check_bits(wbits, "wbits"), check_bits(abits, "abits")
        self.samples = samples
        self.register_buffer("w_threshold", torch.zeros(()))
        self.register_buffer("a_threshold", torch.zeros(()))
        self.register_buffer("a_signed", torch.ones((), dtype=torch.bool))
        self.calibrating = False
        self.clip = "mse"  # threshold rule: mse | kl
        self.quantizer = "linear"  # weight quantizer: linear | kmeans
        self.kmeans_iters, self.kmeans_seed = 3, 0
        self._act_sample: Tensor | None = None
        self._cache: dict[tuple[Any, ...], Any] = {}

    @property
    def weight(self) -> Tensor:
        return self.layer.weight

    # --- thresholds ------------------------------------------------------
    def set_bits(self, wbits: int, abits: int) -> None:
        """Use ``wbits``/``abits`` from now on, with thresholds for the current weights and calibration."""
        self.wbits, self.abits = check_bits(wbits, "wbits"), check_bits(abits, "abits")
        self.refresh_thresholds()

    def refresh_thresholds(self, weights_changed: bool = False) -> None:
        """Recompute the weight threshold (memoised per bits unless the weights changed) and the activation one."""
        if weights_changed:
            self._cache = {k: v for k, v in self._cache.items() if k[0] not in ("w", "k")}
        if self.quantizer == "kmeans":
            if self.wbits < FLOAT_BITS:
                key = ("k", self.wbits, self.kmeans_iters, self.kmeans_seed)
                if key not in self._cache:
                    self._cache[key] = kmeans_1d(self.layer.weight, self.wbits, self.kmeans_iters,
                                                 self.kmeans_seed)[1].to(torch.int16)
                self.w_labels.copy_(self._cache[key])
        else:
            key = ("w", self.wbits, self.clip)
            if key not in self._cache:
                self._cache[key] = threshold(self.layer.weight, self.wbits, signed=True, method=self.clip)
            self.w_threshold.fill_(self._cache[key])
        if self._act_sample is not None:
            key = ("a", self.abits, self.clip)
            if key not in self._cache:
                self._cache[key] = threshold(self._act_sample, self.abits, signed=bool(self.a_signed),
                                             method=self.clip)
            self.a_threshold.fill_(self._cache[key])

    def use_quantizer(self, quantizer: str, iters: int = 3, seed: int = 0) -> None:
        """Quantize weights with ``linear`` or ``kmeans`` (``iters`` Lloyd iterations, seeded k-means++)."""
        if quantizer not in QUANTIZERS:
            raise ConfigError(f"unknown weight quantizer {quantizer!r}; use one of {list(QUANTIZERS)}")
        self.quantizer, self.kmeans_iters, self.kmeans_seed = quantizer, int(iters), int(seed)
        if quantizer == "kmeans" and not hasattr(self, "w_labels"):
            self.register_buffer("w_labels", torch.zeros(self.layer.weight.shape, dtype=torch.int16,
                                                         device=self.layer.weight.device))

    def quantized_weight(self) -> Tensor:
        """The weight the forward pass uses: on the k-bit grid (linear) or the cluster means (k-means)."""
        w = self.layer.weight
        if self.wbits >= FLOAT_BITS:
            return w
        if self.quantizer == "kmeans":
            labels = self.w_labels.long().flatten()
            flat = w.flatten()
            k = 2 ** self.wbits
            sums = torch.zeros(k, dtype=w.dtype, device=w.device).index_add(0, labels, flat.detach())
            counts = torch.bincount(labels, minlength=k).clamp_min(1).to(w.dtype)
            shared = (sums / counts)[labels].reshape(w.shape)
            # straight-through (exactly the shared values forward): the same step as the HAQ code's re-projection
            return shared + (w - w.detach())
        return fake_quantize(w, self.wbits, self.w_threshold, signed=True)

    def _record(self, x: Tensor) -> None:
        flat = x.detach().flatten()
        if flat.numel() > self.samples:  # a fixed, evenly spaced subsample keeps calibration deterministic
            idx = torch.linspace(0, flat.numel() - 1, self.samples).long()
            flat = flat[idx]
        self._act_sample = flat.clone() if self._act_sample is None else torch.cat([self._act_sample, flat])
        self.a_signed.fill_(bool((self._act_sample < 0).any()))

    # --- forward ----------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self.calibrating:
            self._record(x)
            return self.layer(x)
        if self.abits < FLOAT_BITS:
            x = fake_quantize(x, self.abits, self.a_threshold, signed=bool(self.a_signed))
        w = self.quantized_weight()
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)

    def extra_repr(self) -> str:
        extra = "" if self.quantizer == "linear" else f", quantizer={self.quantizer}"
        return f"wbits={self.wbits}, abits={self.abits}, clip={self.clip}{extra}"


def wrap_model(model: nn.Module, wbits: int = FLOAT_BITS, abits: int = FLOAT_BITS) -> nn.Module:
    """A deep copy of ``model`` with every ``nn.Conv2d``/``nn.Linear`` replaced by a ``QuantLayer``."""
    check_bits(wbits, "wbits")
    check_bits(abits, "abits")
    model = copy.deepcopy(model)
    if isinstance(model, QUANTIZABLE):
        raise ConfigError("the model is a single conv/linear layer; wrap it in an nn.Sequential to quantize it")
    done: dict[int, QuantLayer] = {}

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantLayer):
                continue
            if isinstance(child, QUANTIZABLE):
                wrapper = done.get(id(child))  # a layer used twice stays one (shared) layer
                if wrapper is None:
                    wrapper = done[id(child)] = QuantLayer(child, wbits, abits)
                setattr(parent, name, wrapper)
            else:
                visit(child)

    visit(model)
    if not done:
        raise ConfigError(f"the model ({type(model).__name__}) has no nn.Conv2d or nn.Linear layer to quantize; "
                          "pass a network built from them")
    return model


def quant_layers(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    """The ``(name, QuantLayer)`` pairs of a wrapped model in module order (each shared layer once)."""
    seen: set[int] = set()
    out = []
    for name, m in model.named_modules():
        if isinstance(m, QuantLayer) and id(m) not in seen:
            seen.add(id(m))
            out.append((name, m))
    return out


@torch.no_grad()
def layer_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """(input shape, output shape) of each ``QuantLayer`` by name, from one batch-1 float forward pass (its
    first call); the layers' bit-widths and the model's mode are restored."""
    layers = quant_layers(model)
    shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    hooks = []
    for _, q in layers:
        def hook(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
            shapes.setdefault(id(mod), (tuple(inp[0].shape), tuple(out.shape)))
        hooks.append(q.register_forward_hook(hook))
    was_training = model.training
    saved = [(q.wbits, q.abits) for _, q in layers]
    try:
        for _, q in layers:
            q.wbits, q.abits = FLOAT_BITS, FLOAT_BITS
        model.eval()
        param = next(iter(model.parameters()))
        model(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
        for (_, q), (w, a) in zip(layers, saved):
            q.wbits, q.abits = w, a
        model.train(was_training)
    for name, q in layers:
        if id(q) not in shapes:
            raise ConfigError(f"layer '{name}' is never called in the forward pass; remove it from the model "
                              "before quantizing")
    return {name: shapes[id(q)] for name, q in layers}


@torch.no_grad()
def layer_infos(model: nn.Module, input_shape: Sequence[int]) -> list[LayerInfo]:
    """Shape facts of each ``QuantLayer`` from one batch-1 float forward pass (first call of each layer)."""
    layers = quant_layers(model)
    shapes = layer_shapes(model, input_shape)
    infos = []
    for name, q in layers:
        ishape, oshape = shapes[name]
        layer = q.layer
        in_elems, out_elems = math.prod(ishape[1:]), math.prod(oshape[1:])
        if isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1]
            info = LayerInfo(name, "conv", layer.in_channels, layer.out_channels, layer.kernel_size[0],
                             layer.stride[0], layer.groups, ishape[-1] * ishape[-2], layer.weight.numel(),
                             out_elems * (layer.in_channels // layer.groups) * k, in_elems, out_elems)
        else:
            rows = out_elems // layer.out_features
            info = LayerInfo(name, "linear", layer.in_features, layer.out_features, 1, 0, 1, max(rows, 1),
                             layer.weight.numel(), rows * layer.in_features * layer.out_features, in_elems, out_elems)
        infos.append(info)
    return infos


@torch.no_grad()
def calibrate(model: nn.Module, x: Tensor, batch_size: int = 256) -> None:
    """Record each layer's float input on ``x`` (for activation thresholds) and set every threshold."""
    layers = [q for _, q in quant_layers(model)]
    was_training = model.training
    model.eval()
    for q in layers:
        q.calibrating, q._act_sample, q._cache = True, None, {}
    try:
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size])
    finally:
        for q in layers:
            q.calibrating = False
        model.train(was_training)
    for q in layers:
        q.refresh_thresholds()


def set_policy(model: nn.Module, policy: Iterable[tuple[int, int]]) -> None:
    """Give the wrapped layers (module order) the ``(wbits, abits)`` pairs of ``policy``."""
    layers = quant_layers(model)
    policy = list(policy)
    if len(policy) != len(layers):
        raise ConfigError(f"the policy has {len(policy)} (wbits, abits) pairs but the model has {len(layers)} "
                          "quantizable layers; give one pair per layer")
    for (_, q), (w, a) in zip(layers, policy):
        q.set_bits(int(w), int(a))


def quantized_size_bytes(weight_params: Sequence[int], wbits: Sequence[int]) -> int:
    """Exact storage of the quantized weights: ``sum(ceil(params * bits / 8))`` bytes (one ceil per layer)."""
    return sum(math.ceil(n * b / 8) for n, b in zip(weight_params, wbits))


def set_clip(model: nn.Module, method: str) -> None:
    """Choose the clipping-threshold rule of every wrapped layer: ``mse`` or ``kl`` (the HAQ code's)."""
    if method not in CLIP_METHODS:
        raise ConfigError(f"unknown clipping method {method!r}; use one of {list(CLIP_METHODS)}")
    for _, q in quant_layers(model):
        q.clip = method
        q.refresh_thresholds()


def set_quantizer(model: nn.Module, quantizer: str, iters: int = 3, seed: int = 0) -> None:
    """Quantize the weights of every wrapped layer with ``linear`` or ``kmeans`` (HAQ's size-budget quantizer)."""
    for _, q in quant_layers(model):
        q.use_quantizer(quantizer, iters, seed)
        q.refresh_thresholds()
