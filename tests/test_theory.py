"""Theory models: the bilinear model (Zhu et al. 2024 §3) and the one-layer transformer dynamics (§4)."""
import math

import pytest
import torch

from reasoning_lab.studies.theory import bilinear as bl
from reasoning_lab.studies.theory import one_layer as ol

F64 = torch.float64


# --------------------------------------------------------------------------------------------- bilinear
def test_gradient_formula_equals_autograd():
    data = bl.pair_data(4, 11)
    U = bl.embeddings(11, 7, seed=3)
    theta = torch.randn(7, 7, dtype=F64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    bl.loss(theta, U, data).backward()
    assert torch.allclose(bl.gradient(theta.detach(), U, data), theta.grad, atol=1e-14)
    S = theta.detach().clone().requires_grad_(True)
    bl.loss((S + S.T) / 2, U, data).backward()
    sym = (theta.detach() + theta.detach().T) / 2
    assert torch.allclose(bl.gradient(sym, U, data, symmetric=True), S.grad, atol=1e-14)


def test_data_set_and_embeddings():
    data = bl.pair_data(3, 8)
    assert data.inputs.tolist() == [0, 1, 2, 4, 5] and data.targets.tolist() == [3, 4, 5, 1, 2]
    assert (data.x1, data.y1, data.size) == (0, 3, 5)
    assert torch.equal(bl.embeddings(8, 5, 1), bl.embeddings(8, 5, 1))
    U = bl.embeddings(200, 4000, 0)
    assert abs((U * U).sum(1).mean().item() - 1) < 0.01          # E|u|² = 1
    with pytest.raises(ValueError):
        bl.pair_data(5, 9)


@pytest.mark.parametrize("symmetric", [False, True])
def test_gram_form_equals_gradient_descent_on_theta(symmetric):
    n, m, d, lr, steps = 4, 10, 6, 3.0, 40
    data, U = bl.pair_data(n, m), bl.embeddings(m, d, seed=2)
    traj = bl.simulate([d], n, m, lr, steps, seeds=[2], symmetric=symmetric, record=[0, 7, steps])
    theta = torch.zeros(d, d, dtype=F64)
    for k in range(steps + 1):
        if k in (7, steps):
            i = [0, 7, steps].index(k)
            lg = bl.logits(theta, U)
            assert math.isclose(traj.train_loss[i, 0, 0], bl.loss(theta, U, data).item(), rel_tol=1e-10)
            assert math.isclose(traj.reverse_loss[i, 0, 0], bl.reverse_loss(theta, U, data).item(), rel_tol=1e-10)
            assert math.isclose(traj.reverse_logit[i, 0, 0], lg[data.y1, data.x1].item(), rel_tol=1e-9, abs_tol=1e-12)
            rates = bl.logit_rates(theta, U, data, symmetric)
            assert math.isclose(traj.forward_rate[i, 0, 0], rates[data.x1, data.y1].item(), rel_tol=1e-9)
            assert math.isclose(traj.reverse_rate[i, 0, 0], rates[data.y1, data.x1].item(), rel_tol=1e-8, abs_tol=1e-14)
        theta = theta - lr * bl.gradient(theta, U, data, symmetric)
    if symmetric:
        assert torch.allclose(theta, theta.T, atol=1e-14)
        assert math.isclose(bl.logits(theta, U)[data.x1, data.y1], bl.logits(theta, U)[data.y1, data.x1], rel_tol=1e-12)


def test_symmetric_variant_reverses_and_plain_one_does_not():
    kw = dict(dims=[256], n_pairs=8, vocab=16, lr=10.0, steps=300, seeds=[0, 1])
    plain, sym = bl.simulate(**kw), bl.simulate(symmetric=True, **kw)
    assert plain.train_loss_ratio()[-1].max() < 0.05 and sym.train_loss_ratio()[-1].max() < 0.1
    assert plain.reverse_loss_ratio()[-1].min() > 0.9
    assert sym.reverse_loss_ratio()[-1].max() < 0.3


def test_reverse_rate_is_order_one_over_d():
    dims, seeds = [64, 1024], range(300)
    rms = {k: v.pow(2).mean(-1).sqrt() for k, v in bl.initial_rates(dims, 20, 40, seeds).items()}
    theory = bl.initial_rate_theory(dims, 20, 40)
    assert 0.85 < rms["forward"][0] / rms["forward"][1] < 1.15                 # Θ(1)
    assert 11 < rms["reverse_target"][0] / rms["reverse_target"][1] < 23        # 16 = 1024/64
    ratio_softmax = (theory["reverse_softmax"][0] / theory["reverse_softmax"][1]).item()
    assert 0.7 * ratio_softmax < rms["reverse_softmax"][0] / rms["reverse_softmax"][1] < 1.3 * ratio_softmax
    for k in theory:
        assert torch.allclose(rms[k], theory[k], rtol=0.25), k
    assert rms["reverse"][1] < 0.02 * rms["forward"][1]


def test_orthogonal_limit_solves_its_ode_and_matches_large_d():
    m, nd = 40, 39
    t = torch.tensor([0.0, 5.0, 50.0, 500.0, 5000.0], dtype=F64)
    lim = bl.orthogonal_limit(t, m, nd)
    assert lim["forward_logit"][0] == 0 and math.isclose(lim["train_loss"][0], math.log(m), rel_tol=1e-12)
    h = 1e-4
    l_plus, l_minus = (bl.orthogonal_limit(t[1:] + s, m, nd)["forward_logit"] for s in (h, -h))
    c = m / (m - 1)
    one_minus_p = (m - 1) / (torch.exp(c * lim["forward_logit"][1:]) + m - 1)
    assert torch.allclose((l_plus - l_minus) / (2 * h), one_minus_p / nd, rtol=1e-5)
    traj = bl.simulate([4096], 20, m, 10.0, 500, seeds=[0], record=[500])
    ref = bl.orthogonal_limit(traj.t, m, nd)
    assert abs(traj.forward_logit[-1, 0, 0] / ref["forward_logit"][-1] - 1) < 0.05
    assert abs(traj.reverse_loss[-1, 0, 0] - math.log(m)) < 0.1


def test_leakage_prediction_tracks_the_reverse_loss():
    traj = bl.simulate([256, 1024], 20, 40, 10.0, 1000, seeds=[0, 1], record=20)
    pred = bl.leakage_prediction(traj.t, [256, 1024], [0, 1], 20, 40)
    assert (pred["reverse_loss"] - traj.reverse_loss).abs().max() < 0.15
    eps = traj.epsilon().abs()
    assert eps[1].max() < 0.03 and traj.train_loss_ratio()[-1].max() < 0.01


# --------------------------------------------------------------------------------------------- one layer
def test_one_layer_gradients_equal_autograd():
    task = ol.chain_task(5, 2, vocab=20)
    g = torch.Generator().manual_seed(0)
    Y = torch.randn(20, 20, dtype=F64, generator=g, requires_grad=True)
    Z = torch.randn(20, 20, dtype=F64, generator=g, requires_grad=True)
    ol.loss(Y, Z, task.contexts, task.targets).backward()
    gY, gZ = ol.gradients(Y.detach(), Z.detach(), task.contexts, task.targets)
    assert torch.allclose(gY, Y.grad, atol=1e-14) and torch.allclose(gZ, Z.grad, atol=1e-14)


def test_tasks():
    task = ol.reversal_task(4, 1)
    assert task.vocab == 10 and task.contexts.shape == (7, 2)
    assert task.contexts[:, 1].tolist() == [8] * 4 + [9] * 3 and task.targets.tolist() == [4, 5, 6, 7, 0, 1, 2]
    chain = ol.chain_task(4, 1, vocab=16)
    assert chain.contexts.shape == (11, 2) and chain.vocab == 16
    with pytest.raises(ValueError):
        ol.reversal_task(4, 4)
    with pytest.raises(ValueError):
        ol.chain_task(4, 1, vocab=10)


@pytest.mark.parametrize("lr_z", [0.0, 5.0])
def test_held_out_reverse_weight_does_not_grow(lr_z):
    task = ol.reversal_task(10, 3, vocab=30)
    dyn = ol.simulate(task, 5.0, lr_z, 1500, record=12)
    s = dyn.series
    assert s["forward_weight"][-1] > 5 and (s["forward_weight"].diff() >= 0).all()
    assert s["forward_prob"][-1] > 0.95
    assert (s["reverse_weight"] == 0).all()                      # the row of Bᵢ is never touched
    assert s["reverse_weight_trained"][-1] > 5                   # control: trained reverse sentences do grow it
    assert (s["reverse_prob_max"] <= task.chance * (1 + 1e-9)).all()
    assert ol.bound_holds(task, dyn.Y, dyn.Z)


def test_chain_indirect_weight_does_not_grow():
    task = ol.chain_task(10, 3, vocab=40)
    dyn = ol.simulate(task, 5.0, 5.0, 1500, record=12)
    s = dyn.series
    assert (s["indirect_weight"] <= 0).all() and (s["indirect_weight"].diff() <= 1e-15).all()
    assert s["indirect_weight_trained"][-1] > 3 and s["forward_weight"][-1] > 5
    assert (s["indirect_prob_max"] <= task.chance * (1 + 1e-9)).all()
    assert s["two_step_prob"][-1] > 0.9
    assert ol.bound_holds(task, dyn.Y, dyn.Z)


@pytest.mark.parametrize("lr_z", [0.0, 2.0])
def test_reduced_ode_matches_simulation(lr_z):
    task = ol.reversal_task(12, 4, vocab=32)
    dyn = ol.simulate(task, 2.0, lr_z, 1500, record=10)
    ode = ol.forward_ode(12, len(task.targets), 32, 2.0, lr_z, 1500, record=10)
    assert torch.equal(ode["steps"], dyn.steps)
    assert torch.allclose(ode["forward_weight"][1:], dyn.series["forward_weight"][1:], rtol=0.03)
    assert torch.allclose(ode["attention_entity"], dyn.series["attention_entity"], atol=0.02)


def test_epsilon_plus_is_the_smallest_exponent_the_theorem_needs():
    """ε⁺ = max(0, sup_t ε(t)): the bound (L/L0)^ε⁺ holds at every recorded time, a slightly smaller
    exponent fails somewhere when ε⁺ > 0, and runs whose reverse loss only rose get ε⁺ = 0."""
    from reasoning_lab.studies.theory import figures as tf

    dims, seeds = [16, 256], [0, 1, 2, 3]
    traj = bl.simulate(dims, 6, 16, 10.0, 300, seeds=seeds, record=40)
    leak = bl.leakage_prediction(traj.t, dims, seeds, 6, 16)
    s = tf.epsilon_summary(traj, leak)
    rL, rR = traj.train_loss_ratio()[1:], traj.reverse_loss_ratio()[1:]
    for j in range(len(dims)):
        for k in range(len(seeds)):
            e = float(s["eps_plus"][j, k])
            assert e >= 0
            assert bool((rR[:, j, k] >= rL[:, j, k] ** e * (1 - 1e-12)).all())
            if e > 0:
                assert not bool((rR[:, j, k] >= rL[:, j, k] ** (0.99 * e)).all())
            else:
                assert float(traj.epsilon_sup()[j, k]) <= 0
    assert s["mean"].shape == (2,) and (s["p90"] >= s["eps_plus"].min(1)).all()
    assert 0 <= s["rose"].min() and s["rose"].max() <= 1


def test_theory_figures_draw(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from reasoning_lab.studies.theory import figures as tf
    from reasoning_lab.studies.theory import one_layer as ol

    dims, seeds = [16, 64], [0, 1]
    traj = bl.simulate(dims, 6, 16, 10.0, 100, seeds=seeds, record=20)
    limit = bl.orthogonal_limit(traj.t, 16, 11)
    leak = bl.leakage_prediction(traj.t, dims, seeds, 6, 16)
    sym = bl.simulate([64], 6, 16, 10.0, 100, seeds=seeds, symmetric=True, record=20)
    figs = [tf.loss_figure(traj, limit, leak, 16), tf.forward_logit_figure(traj, limit, 16, 11),
            tf.ratio_figure(traj), tf.epsilon_figure(tf.epsilon_summary(traj, leak)),
            tf.rates_along_figure(traj, 10.0), tf.symmetric_figure(traj, sym, 16)]
    assert "<input" in tf.loss_player(traj, limit, leak, 16).data
    task, chain = ol.reversal_task(6, 2, 24), ol.chain_task(6, 2, 24)
    keep = [0, 5, 50]
    dyn = ol.simulate(task, 5.0, 5.0, 50, record=10, keep=keep)
    frozen = ol.simulate(task, 5.0, 0.0, 50, record=10)
    ode = ol.forward_ode(6, len(task.targets), 24, 5.0, 5.0, 50, record=10)
    ode0 = ol.forward_ode(6, len(task.targets), 24, 5.0, 0.0, 50, record=10)
    figs += [tf.weights_figure(dyn, frozen, ode, ode0, 6, 24, len(task.targets), 5.0, 5.0),
             tf.probabilities_figure(dyn, frozen, ode, 24),
             tf.chain_figure(ol.simulate(chain, 5.0, 5.0, 50, record=10), 24)]
    assert "<input" in tf.weight_player(dyn, task, keep, 2).data
    for i, fig in enumerate(figs):
        for ax in fig.axes:
            if ax.get_label() != "<colorbar>" and ax.lines:
                assert ax.get_xlabel() and ax.get_ylabel()
        fig.savefig(tmp_path / f"{i}.png")
