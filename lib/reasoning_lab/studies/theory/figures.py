"""Figures of the two theory chapters: each function draws one figure from a simulation's records, with
the theory's prediction dashed over the measurement."""
from __future__ import annotations

import numpy as np
import torch

from ... import plots
from .bilinear import orthogonal_limit, simulate

# ---------------------------------------------------------------------------------------------------
# The bilinear model


def _subplots(n: int = 1, width: float = 5.0, height: float = 4.2):
    """``n`` panels side by side, ``width`` inches each: two of them fit the book's column with their
    8-point legends readable (plots.shown_text_px)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height))
    return fig, np.atleast_1d(axes)


def _log_axes(ax, xlabel: str, ylabel: str, title: str = "", ylog: bool = True, legend: int | None = 8):
    ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if legend:
        ax.legend(fontsize=legend)


def _dimension_axes(ax, ylabel: str, title: str) -> None:
    """Log-log axes over the embedding dimension (base 2)."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel="embedding dimension d", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)


def dimension_colours(dims):
    import matplotlib.pyplot as plt

    return dict(zip(dims, plt.cm.viridis(np.linspace(0, 0.9, len(dims)))))


def loss_panel(ax, traj, limit, leak, d: int, vocab: int, legend: bool = True) -> None:
    """Training and reverse loss at one ``d`` (seed bands) with the orthogonal limit and the leakage
    prediction dashed over them."""
    i, t = traj.index(d), traj.t.numpy()[1:]
    plots.band(ax, t, traj.train_loss[1:, i].T.numpy(), f"training loss L, d = {d}", color="C0")
    plots.band(ax, t, traj.reverse_loss[1:, i].T.numpy(), f"reverse loss L_rev, d = {d}", color="C3")
    ax.plot(t, limit["train_loss"][1:], "k--", lw=1.2, label="L, orthogonal limit (theory)")
    ax.plot(t, leak["reverse_loss"][1:, i].mean(-1), "--", color="C3", lw=1.2, alpha=0.8,
            label="L_rev, leakage prediction (theory)")
    ax.axhline(np.log(vocab), color="grey", ls=":", lw=1, label="log m (uniform guess)")
    top = max(3 * np.log(vocab), float(traj.reverse_loss[:, i].max()) * 1.5)
    ax.set_ylim(float(limit["train_loss"][-1]) / 3, top)
    _log_axes(ax, "training time t = lr × step", "loss (nats)", f"embedding dimension d = {d}",
              legend=8 if legend else None)
    if legend:
        ax.legend(fontsize=8, loc="lower left")


def loss_figure(traj, limit, leak, vocab: int):
    """The losses at the smallest and the largest simulated ``d``."""
    fig, axes = _subplots(2)
    loss_panel(axes[0], traj, limit, leak, traj.dims[0], vocab)
    loss_panel(axes[1], traj, limit, leak, traj.dims[-1], vocab, legend=False)
    return fig


def loss_player(traj, limit, leak, vocab: int):
    """A static player stepping :func:`loss_panel` through every simulated ``d``."""
    fig, (ax,) = _subplots(1, 7.0)

    def show(j):
        ax.clear()
        loss_panel(ax, traj, limit, leak, traj.dims[j], vocab)

    show(len(traj.dims) - 1)
    fig.tight_layout()
    return plots.scrubber(fig, show, range(len(traj.dims)), interval=600)


def forward_logit_figure(traj, limit, vocab: int, n_data: int):
    """The forward logit of a few ``d`` against the exact ODE solution and its ``log t`` asymptote."""
    fig, (ax,) = _subplots(1, 7.0, 4.0)
    t, dims, colours = traj.t.numpy()[1:], traj.dims, dimension_colours(traj.dims)
    for d in sorted({dims[0], dims[len(dims) // 2], dims[-1]}):
        plots.band(ax, t, traj.forward_logit[1:, traj.index(d)].T.numpy(), f"simulation, d = {d}",
                   color=colours[d])
    ax.plot(t, limit["forward_logit"][1:], "k--", lw=1.5, label="orthogonal limit (exact ODE solution)")
    ax.plot(t, (vocab - 1) / vocab * np.log(vocab * t / n_data), ":", color="grey", lw=1.5,
            label="((m−1)/m)·log(m t/|D|)")
    ax.set_ylim(-0.5, None)
    _log_axes(ax, "training time t = lr × step (log scale)", r"forward logit $u_{x_1}^\top \Theta\, u_{y_1}$",
              "The forward logit grows like log t", ylog=False)
    return fig


def ratio_figure(traj):
    """Each run's path ``(L/L0, L_rev/L_rev0)`` at the smallest and largest ``d``, with Theorem 1's bound
    for the largest constrained exponent among the seeds."""
    fig, axes = _subplots(2)
    colours = dimension_colours(traj.dims)
    eps_plus = traj.epsilon_sup().clamp_min(0)
    for ax, d in zip(axes, (traj.dims[0], traj.dims[-1])):
        i = traj.index(d)
        rL, rR = traj.train_loss_ratio()[:, i].numpy(), traj.reverse_loss_ratio()[:, i].numpy()
        for s in range(rL.shape[1]):
            ax.plot(rL[:, s], rR[:, s], color=colours[d], lw=1, alpha=0.6,
                    label="runs (one per seed)" if s == 0 else None)
        e = float(eps_plus[i].max())
        x = np.geomspace(rL.min(), 1, 100)
        ax.plot(x, x ** e, "k--", lw=1.5, label=f"bound (L/L0)^ε, ε = {e:.3f}")
        _log_axes(ax, "training-loss ratio L(t)/L(0)  (training proceeds to the right)",
                  "reverse-loss ratio L_rev(t)/L_rev(0)", f"d = {d}")
        ax.invert_xaxis()
    return fig


def epsilon_summary(traj, leak) -> dict[str, np.ndarray]:
    """Per ``d``: the constrained exponent ``ε⁺ = max(ε*, 0)`` of every seed (``ε*`` the sup over the
    recorded times), its mean and 90th percentile over seeds, the share of seeds whose reverse loss rose
    at some time (ε* < 0 means it only rose: the inequality then holds for every ε ≥ 0), and the same
    ``ε⁺`` computed from the leakage prediction."""
    eps = traj.epsilon_sup().clamp_min(0).numpy()                                   # [dims, seeds]
    pred_ratio = leak["reverse_loss"][1:] / leak["reverse_loss"][:1]
    pred = (pred_ratio.log() / traj.train_loss_ratio()[1:].log()).max(0).values.clamp_min(0).numpy()
    return {"dims": np.asarray(traj.dims), "eps_plus": eps, "mean": eps.mean(1),
            "p90": np.quantile(eps, 0.9, axis=1), "predicted_mean": pred.mean(1),
            "rose": (traj.epsilon_sup() < 0).float().mean(1).numpy()}


def epsilon_figure(summary: dict[str, np.ndarray]):
    """``ε⁺`` against ``d``: seeds as dots, mean and 90th percentile as lines, the leakage prediction
    dashed, and a ``1/d`` guide."""
    fig, (ax,) = _subplots(1, 7.0, 4.2)
    dims, eps = summary["dims"], summary["eps_plus"]
    colours = dimension_colours(list(dims))
    for j, d in enumerate(dims):
        ax.scatter(np.full(eps.shape[1], d), np.maximum(eps[j], 1e-5), color=colours[d], s=10, alpha=0.5)
    ax.plot(dims, summary["mean"], "o-", color="C0", label="mean over seeds (dots: seeds; 0 drawn at 1e-5)")
    ax.plot(dims, summary["p90"], "^-", color="C1", label="90th percentile over seeds")
    ax.plot(dims, summary["predicted_mean"], "s--", color="C3", label="leakage prediction (theory), mean")
    ax.plot(dims, summary["mean"][0] * dims[0] / dims.astype(float), ":", color="grey", label="∝ 1/d (guide)")
    _dimension_axes(ax, "ε⁺ = max(0, sup_t ε(t))", "The exponent Theorem 1 constrains shrinks as d grows")
    return fig


def rates_figure(rate_dims, rms: dict, theory: dict):
    """Root-mean-square initial rates: measured markers, derived lines."""
    fig, (ax,) = _subplots(1, 7.0, 4.2)
    styles = {"forward": ("C0", "forward logit (Θ(1))"), "reverse": ("k", "reverse logit, total"),
              "reverse_target": ("C3", "reverse, target part (theory ∝ 1/d)"),
              "reverse_softmax": ("C2", "reverse, softmax part (theory ∝ 1/(m√d))")}
    for k, (c, label) in styles.items():
        ax.plot(rate_dims, rms[k], "o" if k != "reverse" else "x", color=c, label=label + " — measured")
        if k in theory:
            ax.plot(rate_dims, theory[k], "--", color=c, lw=1.2)
    _dimension_axes(ax, "|d/dt logit| at Θ = 0 (RMS over embeddings)",
                    "Initial rates: markers measured, dashed lines derived")
    return fig


def rates_along_figure(traj, lr: float):
    """The rate formula along training (lines) against finite differences of the logits (dots), the
    reverse rate scaled by ``d``."""
    fig, axes = _subplots(2)
    t = traj.t.numpy()
    tm = (t[1:] + t[:-1]) / 2
    dims, colours = traj.dims, dimension_colours(traj.dims)
    for d in (dims[0], dims[len(dims) // 2], dims[-1]):
        i = traj.index(d)
        for ax, logit, rate, k in ((axes[0], traj.forward_logit, traj.forward_rate, 1),
                                   (axes[1], traj.reverse_logit, traj.reverse_rate, d)):
            fd = np.diff(logit[:, i, 0].numpy()) / np.diff(t)
            ax.plot(t, k * rate[:, i, 0], color=colours[d], label=f"formula{' × d' if k != 1 else ''}, d = {d}")
            ax.plot(tm[::4], k * fd[::4], "o", color=colours[d], ms=3)
    for ax, title in zip(axes, ("forward logit rate", "reverse logit rate × d")):
        ax.set_xscale("symlog", linthresh=lr)
        ax.set(xlabel="training time t (symlog)", ylabel="d/dt logit", title=title)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.suptitle("Lines: the rate formula; dots: finite differences of the simulated logits "
                 f"(seed {traj.seeds[0]})", y=1.02)
    return fig


def symmetric_figure(traj, sym, vocab: int):
    """Reverse loss with a free and with a symmetric Θ at the largest ``d``."""
    fig, (ax,) = _subplots(1, 7.0, 4.2)
    t, i = traj.t.numpy()[1:], traj.index(traj.dims[-1])
    plots.band(ax, t, traj.reverse_loss[1:, i].T.numpy(), "reverse loss, free Θ", color="C3")
    plots.band(ax, t, sym.reverse_loss[1:, 0].T.numpy(), "reverse loss, symmetric Θ", color="C2")
    plots.band(ax, t, sym.train_loss[1:, 0].T.numpy(), "training loss, symmetric Θ", color="C0")
    ax.axhline(np.log(vocab), color="grey", ls=":", lw=1, label="log m")
    _log_axes(ax, "training time t = lr × step", "loss (nats)",
              f"d = {traj.dims[-1]}: with Θ = Θᵀ the reverse loss falls with the training loss")
    return fig


def explore_bilinear(d: int, n: int, lr: float, steps: int, vocab: int):
    """The interactive figure: a fresh simulation at one setting (three seeds)."""
    import matplotlib.pyplot as plt

    m = max(vocab, 2 * n)
    tr = simulate([d], n, m, lr, steps, seeds=[0, 1, 2], record=60)
    fig, (ax,) = _subplots(1, 7.0, 3.8)
    tt = tr.t.numpy()[1:]
    plots.band(ax, tt, tr.train_loss[1:, 0].T.numpy(), "training loss", color="C0")
    plots.band(ax, tt, tr.reverse_loss[1:, 0].T.numpy(), "reverse loss", color="C3")
    ax.plot(tt, orthogonal_limit(tr.t, m, 2 * n - 1)["train_loss"][1:], "k--", lw=1, label="orthogonal limit")
    eps = float(tr.epsilon_sup().clamp_min(0).mean())
    _log_axes(ax, "t = lr × step", "loss (nats)", f"d = {d}, n = {n}, m = {m}: ε⁺ = {eps:.4f}")
    plt.show()


# ---------------------------------------------------------------------------------------------------
# The one-layer transformer

_WEIGHT_LINES = (("forward_weight", dict(color="C0", lw=2.5, alpha=0.7), "Y[Aᵢ,Bᵢ], held-out pairs (forward)"),
                 ("reverse_weight_trained", dict(color="C2", ls="--"), "Y[Bᵢ,Aᵢ], trained pairs (control)"),
                 ("reverse_weight", dict(color="C3", lw=2.5), "Y[Bᵢ,Aᵢ], held-out pairs (reverse)"),
                 ("relation_weight", dict(color="C1"), "Y[R←,Aᵢ], held-out answers"))


def _steps_axes(ax, ylabel: str, title: str, ylog: bool = False, legend: int = 8):
    _log_axes(ax, "optimizer step (log scale)", ylabel, title, ylog=ylog, legend=legend)


def weights_figure(dyn, frozen, ode, ode_frozen, n_pairs: int, vocab: int, n_data: int, lr_y: float,
                   lr_z: float):
    """Effective output weights with learned and with frozen attention, the reduced ODE dashed over them
    and the closed-form late-time growth dotted."""
    fig, axes = _subplots(2, 5.0, 4.3)
    steps = dyn.steps.numpy()
    x = steps[1:]
    snapped = orthogonal_limit(torch.as_tensor(steps * lr_y, dtype=torch.float64), vocab, n_data)
    slope = (n_pairs - 1) / (n_pairs * 0.5) * np.log(x / x[-1]) + float(ode_frozen["forward_weight"][-1])
    guides = ((snapped["forward_logit"][1:], "closed form, attention snapped (β = 1)"),
              (slope, "slope (n−1)/(nβ) per e-fold, β = 1/2"))
    titles = (f"learned attention (lr_z = {lr_z:g})", "attention frozen at 1/2 (lr_z = 0)")
    for ax, run, theory, (guide, guide_label), title in zip(axes, (dyn, frozen), (ode, ode_frozen), guides,
                                                            titles):
        for key, style, label in _WEIGHT_LINES:
            ax.plot(x, run.series[key][1:], label=label, **style)
        ax.plot(x, theory["forward_weight"][1:], "k--", lw=1.3, label="reduced ODE (theory)")
        ax.plot(x, guide, ":", color="grey", lw=1.5, label=guide_label)
        _steps_axes(ax, "effective output weight", title)
    fig.suptitle("Training raises Y[A,B], but Y[B,A] of a held-out pair stays at 0", y=1.01)
    return fig


def probabilities_figure(dyn, frozen, ode, vocab: int):
    """Answer probabilities against the 1/M bound, and the attention on the entity token."""
    fig, axes = _subplots(2)
    x, s = dyn.steps.numpy()[1:], dyn.series
    ax = axes[0]
    ax.plot(x, s["forward_prob"][1:], color="C0", lw=2.5, alpha=0.7, label="p(Bᵢ | Aᵢ R→), held-out pairs")
    ax.plot(x, ode["forward_prob"][1:], "k--", lw=1.2, label="reduced ODE (theory)")
    ax.plot(x, s["reverse_prob_trained"][1:], color="C2", label="p(Aᵢ | Bᵢ R←), trained pairs")
    ax.plot(x, s["reverse_prob_max"][1:], color="C3", lw=2, label="p(Aᵢ | Bᵢ R←), held-out (max over pairs)")
    ax.plot(x, frozen.series["reverse_prob_max"][1:], color="C3", ls="-.", lw=1.5,
            label="same, attention frozen")
    ax.axhline(1 / vocab, color="grey", ls="--", lw=1.2, label="bound 1/M (theory)")
    _steps_axes(ax, "probability of the answer", "The held-out reverse answer never beats 1/M", True, 8)
    ax = axes[1]
    ax.plot(x, s["attention_entity"][1:], color="C4", lw=2.5, alpha=0.7, label="simulation")
    ax.plot(x, ode["attention_entity"][1:], "k--", lw=1.2, label="reduced ODE (theory)")
    _steps_axes(ax, "attention of R→ on the entity token", "Attention scans onto the informative token",
                legend=8)
    return fig


def weight_player(dyn, task, keep, n_heldout: int):
    """A static player of the entity block of Y (rows: context A, B; columns: outputs A, B) over
    training; the dotted line marks the held-out B rows."""
    import matplotlib.pyplot as plt

    ent = torch.cat([task.tokens["A"], task.tokens["B"]])
    n = len(task.tokens["A"])
    block = lambda j: dyn.snapshots[keep[j]][ent][:, ent].numpy()
    vmax = float(np.abs(block(len(keep) - 1)).max())
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    im = ax.imshow(np.zeros((2 * n, 2 * n)), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="Y[context token, output]")
    ax.set_xticks([n / 2 - 0.5, 3 * n / 2 - 0.5], ["outputs A", "outputs B"])
    ax.set_yticks([n / 2 - 0.5, 3 * n / 2 - 0.5], ["context A", "context B"])
    for y, ls in ((n - 0.5, "-"), (2 * n - n_heldout - 0.5, ":")):
        ax.axhline(y, color="k", lw=0.7, ls=ls)
    ax.axvline(n - 0.5, color="k", lw=0.8)
    ax.grid(False)

    def show(j):
        im.set_data(block(j))
        ax.set_title(f"Y after {keep[j]} steps (dotted: held-out B rows below)")

    fig.tight_layout()
    return plots.scrubber(fig, show, range(len(keep)), interval=400)


def chain_figure(cdyn, vocab: int):
    """Chain weights (the held-out indirect weight only decreases) and probabilities (direct vs two steps)."""
    fig, axes = _subplots(2)
    x, c = cdyn.steps.numpy()[1:], cdyn.series
    ax = axes[0]
    for key, style, label in (("forward_weight", dict(color="C0"), "Y[Aᵢ,Bᵢ] (A → B)"),
                              ("second_weight", dict(color="C9", ls="--"), "Y[Bᵢ,Cᵢ] (B → C)"),
                              ("indirect_weight_trained", dict(color="C2"), "Y[Aᵢ,Cᵢ], chains with A ↝ C trained"),
                              ("indirect_weight", dict(color="C3", lw=2.5), "Y[Aᵢ,Cᵢ], held-out chains")):
        ax.plot(x, c[key][1:], label=label, **style)
    ax.axhline(0, color="grey", ls="--", lw=1.2, label="bound: held-out Y[Aᵢ,Cᵢ] ≤ 0 (theory)")
    _steps_axes(ax, "effective output weight", "The indirect weight of a held-out chain only decreases")
    ax = axes[1]
    ax.plot(x, c["two_step_prob"][1:], color="C0", lw=2, label="two steps: p(Bᵢ|Aᵢ →)·p(Cᵢ|Bᵢ →), held-out")
    ax.plot(x, c["indirect_prob_trained"][1:], color="C2", label="p(Cᵢ | Aᵢ ↝), trained chains")
    ax.plot(x, c["indirect_prob_max"][1:], color="C3", lw=2, label="p(Cᵢ | Aᵢ ↝), held-out (max over chains)")
    ax.axhline(1 / vocab, color="grey", ls="--", lw=1.2, label="bound 1/M (theory)")
    _steps_axes(ax, "probability of the answer", "Direct A ↝ C stays at chance; two steps work", True)
    return fig


def explore_one_layer(n_pairs: int, n_heldout: int, vocab: int, lr_y: float, lr_z: float, steps: int):
    """The interactive figure: the reversal dynamics at one setting, with the reduced ODE."""
    import matplotlib.pyplot as plt

    from .one_layer import forward_ode, reversal_task
    from .one_layer import simulate as simulate_one_layer

    tk = reversal_task(n_pairs, n_heldout, vocab)
    d = simulate_one_layer(tk, lr_y, lr_z, steps, record=40)
    th = forward_ode(n_pairs, len(tk.targets), vocab, lr_y, lr_z, steps, record=40)
    xs = d.steps.numpy()[1:]
    fig, (ax,) = _subplots(1, 7.0, 3.8)
    ax.plot(xs, d.series["forward_weight"][1:], lw=2.5, alpha=0.7, label="Y[A,B] held-out")
    ax.plot(xs, th["forward_weight"][1:], "k--", label="reduced ODE")
    ax.plot(xs, d.series["reverse_weight"][1:], lw=2.5, label="Y[B,A] held-out")
    ax.plot(xs, d.series["reverse_weight_trained"][1:], label="Y[B,A] trained")
    _steps_axes(ax, "effective output weight", "", legend=8)
    plt.show()
