"""Linear probes for the bridge entity of 2-hop questions, at every layer and token position.

For a 2-hop question ``[first middle last relation subject | answer]`` the *bridge* is the profile the
relation points to. As in the original, the label is the first token of the bridge's name (its first
name). Features are the residual stream after the embedding and after every block, at each of the five
question positions. A probe is a softmax classifier (weights and bias) fit by L-BFGS on the mean
cross-entropy plus ``l2`` x squared weights; ``l2`` is chosen per (layer, position) by k-fold
cross-validation. All probes, penalties and folds are fit at once as one batched problem (the objectives
are independent, so minimizing their sum minimizes each).

Rows are split into train/test by *person* (the question's first person), and so are the
cross-validation folds: the name positions of a person's questions carry the same features whatever
the relation, so a split by (person, relation) pair would let a test row's name features be seen in
training. ``collect`` keeps one question per (person, relation) pair, so it returns at most as many
rows as there are trained 2-hop pairs (``ProbeData.requested`` records what was asked for).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .questions import Batch, QuestionBank

POSITIONS = ("first", "middle", "last", "relation", "subject")


@dataclass
class ProbeData:
    features: torch.Tensor   # [layers+1, positions, n, d]
    labels: torch.Tensor     # [n] class index (bridge's first name)
    pair: torch.Tensor       # [n] (person, relation) pair id
    batch: Batch             # the questions
    n_classes: int
    person: torch.Tensor | None = None   # [n] first person of each row, for splitting
    requested: int = 0                   # rows asked for (more than the distinct pairs -> fewer)

    def groups(self) -> torch.Tensor:
        """The split unit of every row: the first person (the pair where ``person`` is unknown)."""
        return self.pair if self.person is None else self.person


@torch.no_grad()
def collect(model, bank: QuestionBank, n: int, seed: int = 0, chunk: int = 4096) -> ProbeData:
    """Hidden states of up to ``n`` training 2-hop questions, one per (person, relation) pair (the states
    up to the relation token depend only on the pair), and the bridge labels."""
    g = torch.Generator().manual_seed(seed + 31337)
    prof = bank.profiles
    batch = bank.sample_two_hop(4 * n, g)
    pair = _person_ids(bank, batch) * bank.n_relations + batch.tokens[:, 3] - prof.vocab.offset["subject"] - 4
    order = torch.argsort(pair, stable=True)
    first = torch.ones(len(pair), dtype=torch.bool)
    first[1:] = pair[order][1:] != pair[order][:-1]
    keep = order[first]
    keep = keep[torch.randperm(len(keep), generator=g)[:n]]
    batch = Batch(batch.tokens[keep], batch.answer[keep], batch.subject[keep], batch.hops[keep])
    person, r = pair[keep] // bank.n_relations, pair[keep] % bank.n_relations
    bridge = prof.relations[person, r]
    model.eval()
    device = next(model.parameters()).device
    states = []
    for i in range(0, len(keep), chunk):
        hs = model.hidden_states(batch.tokens[i:i + chunk, :5].to(device))
        states.append(torch.stack(hs).float().cpu())                  # [L+1, B, 5, d]
    feats = torch.cat(states, dim=1).permute(0, 2, 1, 3).contiguous()  # [L+1, 5, n, d]
    return ProbeData(feats, prof.first[bridge], pair[keep], batch, len(prof.vocab.first), person, n)


def _person_ids(bank: QuestionBank, batch: Batch) -> torch.Tensor:
    """Profile index of each question's first person (names are distinct)."""
    s = bank.profiles.vocab.sizes()
    o = bank.profiles.vocab.offset
    code = ((batch.tokens[:, 2] - o["last"]) * s["first"] + batch.tokens[:, 1] - o["first"]) * s["first"] \
        + batch.tokens[:, 0] - o["first"]
    names = bank.profiles
    table = (names.last * s["first"] + names.middle) * s["first"] + names.first
    order = torch.argsort(table)
    return order[torch.searchsorted(table[order], code)]


def fit_softmax(X: torch.Tensor, y: torch.Tensor, l2: torch.Tensor, n_classes: int, max_iter: int = 50,
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """Batched multinomial logistic regression. ``X`` [P, n, d], ``y`` [P, n], ``l2`` [P];
    ``weight`` [P, n] (0/1 row mask) selects each problem's training rows. Returns W [P, d+1, C]."""
    P, n, d = X.shape
    Xb = torch.cat([X, torch.ones(P, n, 1)], dim=-1)
    w = torch.ones(P, n) if weight is None else weight
    count = w.sum(1).clamp_min(1)
    W = torch.zeros(P, d + 1, n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W], lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure():
        opt.zero_grad()
        logits = torch.bmm(Xb, W)
        ce = F.cross_entropy(logits.reshape(-1, n_classes), y.reshape(-1), reduction="none").view(P, n)
        loss = ((ce * w).sum(1) / count + l2 * W[:, :-1].pow(2).sum((1, 2))).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach()


def _scores(X, y, W, n_classes):
    Xb = torch.cat([X, torch.ones(*X.shape[:2], 1)], dim=-1)
    logits = torch.bmm(Xb, W)
    ce = F.cross_entropy(logits.reshape(-1, n_classes), y.reshape(-1), reduction="none").view(X.shape[:2])
    return ce, (logits.argmax(-1) == y)


@dataclass
class ProbeResult:
    accuracy: torch.Tensor   # [layers+1, positions] test accuracy
    loss: torch.Tensor       # [layers+1, positions] test cross-entropy (nats)
    l2: torch.Tensor         # [layers+1, positions] chosen penalty
    unigram_loss: float      # test CE of the training label frequencies
    unigram_accuracy: float  # always guessing the most frequent training label
    n_train: int
    n_test: int

    def best(self) -> tuple[int, int]:
        """(layer, position) of the most accurate probe (lowest loss breaks ties)."""
        score = self.accuracy - 1e-6 * self.loss
        i = int(score.argmax())
        return divmod(i, score.shape[1])


def run_probes(data: ProbeData, l2_grid=(1e-4, 1e-3, 1e-2), folds: int = 3, test_fraction: float = 0.2,
               seed: int = 0, max_iter: int = 50) -> ProbeResult:
    """Fit a probe per (layer, position), ``l2`` by ``folds``-fold CV on the training people; test on
    held-out people (``ProbeData.groups``)."""
    Lp, Pn, n, d = data.features.shape
    g = torch.Generator().manual_seed(seed)
    groups = data.groups()
    pairs = torch.unique(groups)
    perm = pairs[torch.randperm(len(pairs), generator=g)]
    n_test_pairs = max(1, int(test_fraction * len(pairs)))
    test_pairs, train_pairs = perm[:n_test_pairs], perm[n_test_pairs:]
    is_test = torch.isin(groups, test_pairs)
    tr, te = (~is_test).nonzero().squeeze(1), is_test.nonzero().squeeze(1)
    G = Lp * Pn
    X = data.features.reshape(G, n, d)
    mean, std = X[:, tr].mean(1, keepdim=True), X[:, tr].std(1, keepdim=True).clamp_min(1e-6)
    X = (X - mean) / std
    Xtr, ytr = X[:, tr], data.labels[tr]
    # cross-validation folds over training pairs
    fold_of_pair = torch.randperm(len(train_pairs), generator=g) % folds
    lookup = dict(zip(train_pairs.tolist(), fold_of_pair.tolist()))
    fold = torch.tensor([lookup[int(p)] for p in groups[tr]])
    lam = torch.tensor(l2_grid, dtype=torch.float32)
    nL = len(lam)
    # problems ordered (group, l2, fold)
    Xp = Xtr.repeat_interleave(nL * folds, dim=0)
    yp = ytr.expand(G * nL * folds, -1)
    lp = lam.repeat_interleave(folds).repeat(G)
    fidx = torch.arange(folds).repeat(G * nL)
    train_w = (fold[None, :] != fidx[:, None]).float()
    W = fit_softmax(Xp, yp, lp, data.n_classes, max_iter, train_w)
    ce, _ = _scores(Xp, yp, W, data.n_classes)
    held = 1 - train_w
    cv = ((ce * held).sum(1) / held.sum(1).clamp_min(1)).view(G, nL, folds).mean(2)    # [G, nL]
    best_l2 = lam[cv.argmin(1)]
    Wf = fit_softmax(Xtr, ytr.expand(G, -1), best_l2, data.n_classes, max_iter)
    ce_te, ok_te = _scores(X[:, te], data.labels[te].expand(G, -1), Wf, data.n_classes)
    freq = torch.bincount(ytr, minlength=data.n_classes).float() + 1.0
    logq = (freq / freq.sum()).log()
    return ProbeResult(accuracy=ok_te.float().mean(1).view(Lp, Pn), loss=ce_te.mean(1).view(Lp, Pn),
                       l2=best_l2.view(Lp, Pn), unigram_loss=-logq[data.labels[te]].mean().item(),
                       unigram_accuracy=(data.labels[te] == int(freq.argmax())).float().mean().item(),
                       n_train=len(tr), n_test=len(te))


@torch.no_grad()
def model_first_token_loss(model, bank: QuestionBank, data: ProbeData, rows: torch.Tensor | None = None) -> dict:
    """The model's own cross-entropy and accuracy on the bridge's first name when asked the 1-hop question
    ``[name relation]`` (the prefix of the 2-hop question): what the probe is compared with."""
    batch = data.batch
    rows = torch.arange(len(batch)) if rows is None else rows
    tokens = batch.tokens[rows, :4]
    device = next(model.parameters()).device
    model.eval()
    logits = model(tokens.to(device))[:, -1].float().cpu()
    target = data.labels[rows] + bank.profiles.vocab.offset["first"]
    ce = F.cross_entropy(logits, target, reduction="none")
    return {"loss": ce.mean().item(), "accuracy": (logits.argmax(-1) == target).float().mean().item()}


def test_rows(data: ProbeData, test_fraction: float = 0.2, seed: int = 0) -> torch.Tensor:
    """The rows ``run_probes`` holds out (same split for the same seed)."""
    g = torch.Generator().manual_seed(seed)
    pairs = torch.unique(data.groups())
    perm = pairs[torch.randperm(len(pairs), generator=g)]
    test_pairs = perm[:max(1, int(test_fraction * len(pairs)))]
    return torch.isin(data.groups(), test_pairs).nonzero().squeeze(1)


EVAL_SETS = ("train_onehop", "train_twohop", "eval_triples", "eval_first_people")


def loss_lines(final: dict, sets=EVAL_SETS) -> str:
    """Loss and accuracy of a trained model on each evaluation set present in ``final``."""
    return "\n".join(f"{name:>18}: loss {final[name + '_loss']:.2f} nats, "
                     f"accuracy {final[name + '_acc']:.1%}" for name in sets if f"{name}_loss" in final)


def summary(data: ProbeData, result: ProbeResult, own: dict) -> str:
    """The best probe against the model's own loss and the unigram baseline, as text."""
    layer, pos = result.best()
    return "\n".join([
        f"{result.n_train} training rows, {result.n_test} test rows, {data.n_classes} classes "
        f"({len(data.pair)} of {data.requested} requested rows exist)",
        f"best probe: layer {layer}, position '{POSITIONS[pos]}': accuracy "
        f"{result.accuracy[layer, pos]:.1%}, loss {result.loss[layer, pos]:.2f} nats",
        f"model itself (1-hop question, bridge's first name): accuracy {own['accuracy']:.1%}, "
        f"loss {own['loss']:.2f} nats",
        f"unigram baseline: accuracy {result.unigram_accuracy:.1%}, "
        f"loss {result.unigram_loss:.2f} nats"])


def metrics(result: ProbeResult, own: dict, final: dict) -> dict:
    """The chapter's recorded metrics."""
    layer, pos = result.best()
    nan = float("nan")
    return dict(best_probe_layer=layer, best_probe_accuracy=float(result.accuracy[layer, pos]),
                best_probe_position=POSITIONS[pos], best_probe_loss=float(result.loss[layer, pos]),
                subject_probe_accuracy=float(result.accuracy[:, -1].max()),
                model_bridge_accuracy=own["accuracy"], model_bridge_loss=own["loss"],
                unigram_loss=result.unigram_loss, unigram_accuracy=result.unigram_accuracy,
                onehop_accuracy=final["train_onehop_acc"],
                twohop_accuracy=final.get("train_twohop_acc", nan),
                heldout_triples_accuracy=final.get("eval_triples_acc", nan))


def probe_figure(result: ProbeResult, own_loss: float):
    """Probe accuracy per (layer, position) (left) and probe loss by layer with the baselines
    dashed (right)."""
    import matplotlib.pyplot as plt

    from ...plots import heatmap

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"wspace": 0.45})
    heatmap(axes[0], result.accuracy.numpy(), "Probe accuracy for the bridge's first name",
            "token position", "layer (0 = embeddings)", vmin=0, vmax=1,
            colorbar_label="test accuracy")
    axes[0].set_xticks(range(len(POSITIONS)), POSITIONS)
    layers = range(result.loss.shape[0])
    for i, name in enumerate(POSITIONS):
        axes[1].plot(layers, result.loss[:, i], "o-", label=f"probe at '{name}'")
    axes[1].axhline(result.unigram_loss, ls="--", color="grey", label="unigram baseline")
    axes[1].axhline(own_loss, ls="--", color="C3", label="model's own loss (1-hop question)")
    axes[1].set_xticks(layers)
    axes[1].set(xlabel="layer (0 = embeddings)", ylabel="test cross-entropy (nats)",
                title="Probe loss by layer")
    axes[1].legend(fontsize=9)
    return fig


def glue_values(data: ProbeData, result: ProbeResult, final: dict) -> dict:
    """The numbers the chapter's prose quotes."""
    rel = POSITIONS.index("relation")
    return {"subject_acc": float(result.accuracy[:, -1].max()),
            "relation_acc": float(result.accuracy[:, rel].max()), "n_classes": data.n_classes,
            "unigram_acc": result.unigram_accuracy,
            "triples_acc": final.get("eval_triples_acc", float("nan"))}
