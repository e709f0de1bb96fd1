"""DARTS: derivation, the second-order architecture gradient, search resume and NaN handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nasforge.data import synthetic_dataset
from nasforge.errors import TrainingError
from nasforge.experiment import Experiment
from nasforge.oneshot.relax import Relaxation
from nasforge.spaces import make_space
from nasforge.spaces.darts import PRIMITIVES, derive_cell, edge_index, num_edges
from nasforge.strategies import make_strategy
from nasforge.strategies.darts import unrolled_arch_grads
from nasforge.training import cosine_lr

OPS = {name: k for k, name in enumerate(PRIMITIVES)}


def test_derive_keeps_top2_edges_by_strongest_non_none_op():
    nodes = 2
    w = np.full((num_edges(nodes), len(PRIMITIVES)), 0.1)
    # node 0 (inputs 0,1): both edges are kept whatever their weights
    w[edge_index(0, 0), OPS["sep_conv_3x3"]] = 0.5
    w[edge_index(0, 1), OPS["skip_connect"]] = 0.4
    # node 1 (inputs 0,1,2): edge from 1 is dominated by 'none' (ignored), so 0 and 2 win
    w[edge_index(1, 1), OPS["none"]] = 0.99
    w[edge_index(1, 0), OPS["dil_conv_5x5"]] = 0.3
    w[edge_index(1, 2), OPS["max_pool_3x3"]] = 0.35
    gene = derive_cell(w, nodes)
    assert gene == (("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 0), ("max_pool_3x3", 2))


def test_derive_picks_strongest_op_even_when_none_is_largest():
    w = np.zeros((num_edges(1), len(PRIMITIVES)))
    w[:, OPS["none"]] = 0.9
    w[0, OPS["avg_pool_3x3"]] = 0.05
    w[1, OPS["sep_conv_5x5"]] = 0.04
    assert derive_cell(w, 1) == (("avg_pool_3x3", 0), ("sep_conv_5x5", 1))


def _tiny_problem():
    torch.manual_seed(0)
    space = make_space("darts", nodes=2)
    model = space.supernet((1, 6, 6), 3, layers=3, channels=4).double()
    relax = Relaxation(model)
    alphas = relax.parameters()  # one [inputs, ops] tensor per node of each cell type
    with torch.no_grad():
        for a in alphas:
            a.data = 0.5 * torch.randn(a.shape, dtype=torch.float64)
    train = (torch.randn(8, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (8,)))
    valid = (torch.randn(8, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (8,)))
    return model, relax, alphas, train, valid


def _loss(model, relax, params, batch):
    x, y = batch
    relax.soft()  # softmax weights of the relaxation's alphas for this forward pass
    out = functional_call(model, params, (x,)) if params is not None else model(x)
    return F.cross_entropy(out, y)


def test_second_order_gradient_matches_direct_unrolled_derivative():
    model, relax, alphas, train, valid = _tiny_problem()
    eta, wd = 0.1, 3e-4
    names = [n for n, _ in model.named_parameters()]
    weights = [p for _, p in model.named_parameters()]
    momentum = [0.01 * torch.randn_like(w) for w in weights]

    # Direct: d/d alpha of L_val(w - eta (m + grad_w L_train(w, alpha) + wd w), alpha), exact autograd.
    g = torch.autograd.grad(_loss(model, relax, None, train), weights, create_graph=True)
    unrolled = {n: w - eta * (m + gi + wd * w) for n, w, gi, m in zip(names, weights, g, momentum)}
    first_order = torch.autograd.grad(_loss(model, relax, {n: u.detach() for n, u in unrolled.items()}, valid), alphas)
    direct = torch.autograd.grad(_loss(model, relax, unrolled, valid), alphas)

    # The finite difference is checked at a small scale in float64 (the paper's r=0.01 is an
    # approximation whose error depends on the loss surface, not what is tested here).
    before = [w.detach().clone() for w in weights]
    approx, _ = unrolled_arch_grads(lambda b: _loss(model, relax, None, b), weights, alphas, train, valid,
                                    eta, wd, momentum, r=1e-6)
    for d, a in zip(direct, approx):
        assert torch.allclose(d, a, rtol=1e-3, atol=1e-6), (d - a).abs().max()
    # The implicit (Hessian) term matters here: first order alone would differ.
    assert any(not torch.allclose(a, b, rtol=1e-2, atol=1e-4) for a, b in zip(direct, first_order))
    # weights restored exactly
    assert all(torch.equal(b, w) for b, w in zip(before, weights))


def test_cosine_schedule_endpoints():
    assert cosine_lr(0 / 50, 0.025, 0.001) == pytest.approx(0.025)
    assert cosine_lr(25 / 50, 0.025, 0.001) == pytest.approx(0.013)
    assert cosine_lr(50 / 50, 0.025, 0.001) == pytest.approx(0.001)


def _search(tmp_path, name, epochs=3, order=1, callbacks=(), data=None):
    data = data or synthetic_dataset(num_samples=240, seed=0)
    exp = Experiment.create(tmp_path / name, {}, force=True) if not (tmp_path / name).exists() else Experiment.open(tmp_path / name)
    strategy = make_strategy("darts", {"epochs": epochs, "order": order, "batch_size": 32}, "synthetic")
    result = strategy.search(make_space("darts"), data, experiment=exp, seed=3, callbacks=callbacks)
    return strategy, result, exp


@pytest.mark.parametrize("order", [1, 2])
def test_resume_after_interrupt_ends_where_uninterrupted_run_ends(tmp_path, order):
    epochs = 3 if order == 1 else 2  # the second order costs 2-3x a step: one epoch after the cut is enough
    full, full_result, _ = _search(tmp_path, "full", epochs=epochs, order=order)

    def stop_after_epoch_0(strategy, epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path, "cut", epochs=epochs, order=order, callbacks=[stop_after_epoch_0])
    resumed, resumed_result, exp = _search(tmp_path, "cut", epochs=epochs, order=order)

    assert resumed_result.arch == full_result.arch
    for a, b in zip(full.alphas, resumed.alphas):
        assert torch.equal(a, b)
    records = exp.store.epochs("search")
    assert [e["epoch"] for e in records] == list(range(epochs))
    assert records[-1]["arch"] == full_result.arch.to_dict()
    # every epoch records the softmax weights of every edge of both cells (the nodes' rows, in order)
    assert len(records[0]["arch_weights"]["normal"]) == num_edges(4)
    assert np.allclose(np.sum(records[0]["arch_weights"]["reduce"], axis=1), 1.0)


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
    data = synthetic_dataset(num_samples=240, seed=0)
    _search(tmp_path, "run", epochs=1, data=data)
    data.train.source.x[data.train.indices] = float("nan")
    with pytest.raises(TrainingError, match="NaN"):
        _search(tmp_path, "run", epochs=2, data=data)
    state = Experiment.open(tmp_path / "run").load_checkpoint("search")
    assert state["epoch"] == 0


def test_search_learns_on_synthetic():
    data = synthetic_dataset(num_samples=400, seed=0)
    strategy = make_strategy("darts", {"epochs": 4, "batch_size": 32}, "synthetic")
    result = strategy.search(make_space("darts"), data, seed=0)
    accs = [h["metrics"]["valid_acc"] for h in result.history]
    assert accs[-1] > 0.3  # ten classes: chance is 0.1
    # the architecture weights moved away from uniform
    normal = [a.detach() for label, a in strategy.relax.alphas.items() if label.startswith("normal.")]
    w = F.softmax(torch.cat(normal), -1)  # every edge of the normal cell
    assert (w.max(1).values - w.min(1).values).max() > 1e-3
