"""Part IV: the shortest-path generator, its BFS labels and filters, and the hand-built BFS transformer."""
from collections import deque

import pytest
import torch

from reasoning_lab.studies.shortest_paths import SPLIT_NAMES, UNREACHABLE, HandcraftedBFS, label_shares, make_batch
from reasoning_lab.studies.shortest_paths import handcrafted as hc
from reasoning_lab.studies.shortest_paths.data import bfs, adjacency, distances, random_edges
from reasoning_lab.studies.shortest_paths.model import PathTransformer, histogram2d


def ref_tree_path(edges, target):
    """Queue BFS from 1 scanning neighbours in increasing id; the tree path to target ([] if none)."""
    adj = {}
    for a, b in edges:
        if a:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
    parent, queue = {1: None}, deque([1])
    while queue:
        x = queue.popleft()
        for y in sorted(adj.get(x, ())):
            if y not in parent:
                parent[y] = x
                queue.append(y)
    if target not in parent:
        return []
    path = [target]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    return path[::-1]


def ref_dist(edges, target):
    path = ref_tree_path(edges, target)
    return len(path) - 1 if path else UNREACHABLE


@pytest.mark.parametrize("split", SPLIT_NAMES)
def test_make_batch_api(split):
    edges, targets, labels = make_batch(split, 64, torch.Generator().manual_seed(1))
    assert edges.shape == (64, 15, 2) and edges.dtype == torch.long
    assert targets.shape == (64,) and targets.dtype == torch.long
    assert labels.shape == (64,) and labels.dtype == torch.long
    a, b = edges[..., 0], edges[..., 1]
    real = a > 0
    assert ((a < b) | ~real).all() and (b[~real] == 0).all()              # (min, max), no self-loops
    assert (real[:, 1:] <= real[:, :-1]).all()                             # padding only at the end
    assert (edges <= 15).all() and ((targets >= 2) & (targets <= 15)).all()
    assert ((labels >= 1) & (labels <= UNREACHABLE)).all()


def test_make_batch_is_deterministic_and_validates():
    x = make_batch("finetune", 32, torch.Generator().manual_seed(3))
    y = make_batch("finetune", 32, torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(x, y))
    with pytest.raises(ValueError, match="unknown split"):
        make_batch("train", 4)
    with pytest.raises(ValueError):
        make_batch("pretrain", 4, max_vertices=16)


@pytest.mark.parametrize("split", SPLIT_NAMES)
def test_labels_match_reference_bfs(split):
    edges, targets, labels = make_batch(split, 200, torch.Generator().manual_seed(7))
    for e, t, y in zip(edges.tolist(), targets.tolist(), labels.tolist()):
        assert y == ref_dist(e, t)


def test_batched_bfs_matches_reference_on_random_graphs():
    g = torch.Generator().manual_seed(0)
    n = torch.randint(3, 16, (300,), generator=g)
    edges = random_edges(n, 15, g)
    dist = bfs(adjacency(edges, 15))
    for e, row in zip(edges.tolist(), dist.tolist()):
        for t in range(2, 16):
            assert row[t] == ref_dist(e, t)


def test_pretrain_filter_matches_the_original_distribution():
    _, targets, labels = make_batch("pretrain", 5000, torch.Generator().manual_seed(11))
    shares = label_shares(labels)
    assert (targets == 2).all()
    # the original generator: 1: 22%, 2: 20%, 3: 14%, 4: 9%, unreachable: 21%, variance 27
    for label, share in {1: 0.22, 2: 0.20, 3: 0.14, 4: 0.09, UNREACHABLE: 0.21}.items():
        assert abs(shares[label] - share) < 0.025, (label, shares[label])
    assert 24 < labels.float().var() < 30


def test_finetune_targets_on_the_tree_path_with_weight_k():
    edges, targets, labels = make_batch("finetune", 3000, torch.Generator().manual_seed(5))
    assert (edges.max(-1).values.max(-1).values <= 7).all()               # small graphs
    for e, t, y in zip(edges[:400].tolist(), targets[:400].tolist(), labels[:400].tolist()):
        path = ref_tree_path(e, 2)
        assert path and path[y] == t                                       # t at depth y on the 1-2 path
    shares = label_shares(labels)
    assert abs(shares[1] - 0.54) < 0.03 and abs(shares[2] - 0.29) < 0.03
    assert abs((targets == 2).float().mean() - 0.74) < 0.03               # t = 2 stays allowed


def test_small_target_split_and_any_target_split():
    _, t_small, _ = make_batch("test-onpath-small-target", 500, torch.Generator().manual_seed(2))
    assert (t_small <= 7).all()
    _, t_any, y_any = make_batch("test-any-small-graphs", 3000, torch.Generator().manual_seed(2))
    assert (t_any <= 7).all() and abs((y_any == UNREACHABLE).float().mean() - 0.58) < 0.03


@pytest.mark.parametrize("n", [3, 8, 15])
def test_handcrafted_bfs_is_exact(n):
    g = torch.Generator().manual_seed(n)
    edges, d = hc.random_graphs(120, n, g)
    with torch.no_grad():
        out = HandcraftedBFS(n)(edges)
    assert out.dtype == torch.float64
    assert ((out - d.double()) ** 2).mean() <= 1e-9


def test_handcrafted_bfs_on_worst_cases():
    N = 15
    path = [(1, 3)] + [(v, v + 1) for v in range(3, 15)] + [(2, 15)]       # d(1, 2) = 14
    star = [(1, 5)] + [(5, v) for v in range(2, 16) if v != 5]               # a hub of degree 14
    dense = [(a, b) for a in range(1, 7) for b in range(a + 1, 7)][:15]      # a near-clique
    empty = []
    edges = torch.zeros(4, N, 2, dtype=torch.long)
    for i, es in enumerate((path, star, dense, empty)):
        if es:
            edges[i, :len(es)] = torch.tensor(es)
    with torch.no_grad():
        out = HandcraftedBFS(N)(edges)
    expected = distances(edges, N).double()
    assert expected.tolist() == [14, 2, 1, UNREACHABLE]
    assert (out - expected).abs().max() < 1e-6


def test_appendix_constants_are_not_exact():
    g = torch.Generator().manual_seed(0)
    edges, d = hc.random_graphs(200, 8, g, exact_n=True)
    with torch.no_grad():
        out = HandcraftedBFS(8, constants="appendix")(edges)
    mse = ((out - torch.where(d == UNREACHABLE, 9, d).double()) ** 2).mean()
    assert 1e-6 < mse < 1e-3                                                 # close, but not exact


def test_destroy_matrix_is_seeded():
    a, b = HandcraftedBFS(5), HandcraftedBFS(5)
    ka = hc.destroy_matrix(a, torch.Generator().manual_seed(4))
    kb = hc.destroy_matrix(b, torch.Generator().manual_seed(4))
    assert ka == kb and torch.equal(getattr(a, ka[0]), getattr(b, kb[0]))
    assert not torch.equal(getattr(a, ka[0]), getattr(HandcraftedBFS(5), ka[0]))


def test_path_transformer_shapes_and_histogram():
    edges, targets, labels = make_batch("pretrain", 16, torch.Generator().manual_seed(0), max_vertices=8)
    model = PathTransformer(8, d_model=16, n_heads=2, n_layers=1, d_ff=32)
    out = model(edges, targets)
    assert out.shape == (16,)
    H, _ = histogram2d(labels, out.detach())
    cols = H.sum(0)
    assert ((cols == 0) | (abs(cols - 1) < 1e-9)).all()


# --- chapter figures, saved runs and the robustness comparison ------------------------------------
def test_mse_by_target_splits_target_two_from_the_others():
    from reasoning_lab.studies.shortest_paths import figures as spf

    labels = torch.tensor([1, 2, 3, 4])
    res = {"labels": labels, "outputs": torch.tensor([1.0, 3.0, 3.0, 6.0])}
    m = spf.mse_by_target(res, torch.tensor([2, 2, 5, 7]))
    assert m == pytest.approx({"same": 0.5, "other": 2.0, "share": 0.5})
    assert spf.mse_by_target(res, torch.tensor([2, 2, 2, 2]))["other"] != \
        spf.mse_by_target(res, torch.tensor([2, 2, 2, 2]))["other"]      # NaN: no other targets


def test_on_path_test_sets_are_mostly_target_two_and_the_metrics_name_both_parts():
    from reasoning_lab.studies.shortest_paths import figures as spf
    from reasoning_lab.studies.shortest_paths.model import evaluate

    g = torch.Generator().manual_seed(0)
    data = {s: make_batch(s, 512, g, max_vertices=8, max_tune_vertices=5) for s in spf.ON_PATH}
    model = PathTransformer(8, 16, 2, 1, 32).eval()
    m = spf.target_metrics(evaluate(model, data), data)
    for k in ("onpath_small_target", "onpath"):
        assert 0.5 < m[f"target2_share_{k}"] < 0.95
        assert m[f"test_loss_{k}_target2"] >= 0 and m[f"test_loss_{k}_other_targets"] >= 0
    text = spf.label_table({s: data[s] for s in spf.ON_PATH})
    assert all(len(line) <= 88 for line in text.splitlines())
    assert text.count("original (n <= 15)") == 1           # known for the small-target set only


def test_chapter_figures_have_labelled_axes():
    import matplotlib
    matplotlib.use("Agg")
    from reasoning_lab.studies.shortest_paths import figures as spf
    from reasoning_lab.train import History

    g = torch.Generator().manual_seed(1)
    data = {s: make_batch(s, 256, g, max_vertices=8, max_tune_vertices=5) for s in SPLIT_NAMES}
    res = {"labels": data["pretrain"][2], "outputs": data["pretrain"][2].float() + 0.1}
    fig = spf.hist_figure(res, "t")
    assert fig.axes[0].get_xlabel() == "true label" and fig.axes[0].get_ylabel() == "model output"
    log = History()
    for i in range(20):
        log.add(step=i, loss=1.0 / (i + 1),
                **{f"by_label/{k}": 1.0 for k in ("1", "2", "3", "4+", "unreachable")})
    ax = spf.loss_by_label_figure(log, 20.0, 20).axes[0]
    assert ax.get_yscale() == "log" and "MSE" in ax.get_ylabel()
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())      # label variance
    fig = spf.label_share_figure(data, 8)
    assert [a.get_xlabel() for a in fig.axes] == ["label: distance (15 = unreachable)"] * 2


def test_reference_numbers_quoted_in_the_prose_are_the_reference_module():
    """The post's numbers written in plain markdown agree with reference.py."""
    from pathlib import Path

    from reasoning_lab.studies.shortest_paths import reference as ref

    text = " ".join((Path(__file__).parents[1] / "notebooks" / "shortest-paths.md").read_text().split())
    post = ref.POST_TEST_LOSS
    assert (f"{post['test-any-small-graphs']:.2f}, {post['test-any-small-target']:.2f} and "
            f"{post['test-any-large']:.2f}") in text
    assert f"{post['test-onpath-small-target']:.3f} and {post['test-onpath']:.3f}" in text
    assert ref.COMMITTED_SIX_LAYER_TEST_LOSS["test-any-small-graphs"] == 62.72


def test_saved_shortest_path_run_matches_its_params_and_preset(tmp_path):
    """The saved n <= 15 run was made with the cpu-full preset, and the table reads its metrics."""
    import json
    from pathlib import Path

    from reasoning_lab import experiments
    from reasoning_lab.studies.shortest_paths import figures as spf

    folder = Path(__file__).parents[1] / "book" / "data" / "shortest-paths-cpu-full"
    if not (folder / "metrics.json").exists():
        pytest.skip("no saved run")
    saved = spf.saved_run(folder)
    preset = experiments.get("shortest-paths").resolve("cpu-full")
    for k in ("max_vertices", "max_tune_vertices", "n_layers", "pretrain_steps", "batch_size"):
        assert saved["params"][k] == preset[k]
    m = json.loads((folder / "metrics.json").read_text())
    assert f"{m['test_loss_any_large']:7.3f}" in saved["table"]
    assert saved["glue"]["full_test_loss_onpath"] == m["test_loss_onpath"]
    assert saved["table"] in saved["text"] and saved["command"] in saved["text"]
    assert spf.saved_run(tmp_path) == {"text": f"no saved run in {tmp_path.name}/ yet", "glue": {}}


def test_lower_learning_rate_repairs_a_destroyed_readout_more_slowly():
    """The direction of the robustness comparison: with the same destroyed matrix, Adam at 1e-6
    barely moves the loss in a few steps, Adam at 1e-3 lowers it clearly."""
    fast = hc.perturb_and_retrain(5, 1, 15, 32, 1e-3, kind="read_k")
    slow = hc.perturb_and_retrain(5, 1, 15, 32, 1e-6, kind="read_k")
    assert fast["losses"][0] == slow["losses"][0] > 0                    # the same destroyed model
    assert abs(slow["losses"][-1] / slow["losses"][0] - 1) < 0.5
    assert min(fast["losses"][-5:]) < 0.5 * min(slow["losses"][-5:])


def test_appendix_constants_retrain_on_their_own_unreachable_label():
    model = HandcraftedBFS(4, constants="appendix")
    assert torch.equal(model.label(torch.tensor([1, UNREACHABLE])), torch.tensor([1, 5]))
    edges, d = hc.random_graphs(64, 4, torch.Generator().manual_seed(0))
    assert (d == UNREACHABLE).any()
    assert hc.exactness(model, edges, model.label(d))["mse"] < 1e-2      # its own convention
    assert hc.exactness(HandcraftedBFS(4), edges, HandcraftedBFS(4).label(d))["mse"] < 1e-9
    st = hc.perturb_and_retrain(4, 0, 2, 16, 1e-6, kind="read_v", constants="appendix")
    assert len(st["losses"]) == 3


def test_saved_robustness_run_is_the_original_setting():
    from pathlib import Path

    from reasoning_lab.studies.shortest_paths import robustness as rob

    folder = Path(__file__).parents[1] / "book" / "data" / "bfs-robustness"
    if not (folder / "metrics.json").exists():
        pytest.skip("no saved run")
    saved = rob.saved(folder)
    orig = saved["params"]["settings"]["original"]
    # the post's setting: its constants, Adam at 1e-6, 5,000 steps of 512 graphs
    assert (orig["constants"], orig["lr"], orig["steps"], orig["batch_size"]) == ("appendix", 1e-6, 5000, 512)
    assert orig == rob.SETTINGS["original"]
    assert saved["glue"]["original_steps"] == orig["steps"]
    m = saved["metrics"]
    assert [r["kind"] for r in m["ours"]] == [r["kind"] for r in m["original"]]
    assert all(len(r["curve"]) > 10 for r in m["original"])
