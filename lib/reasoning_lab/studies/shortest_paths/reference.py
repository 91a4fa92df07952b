"""Numbers of the original study {cite}`wang2024shortest`, to print beside ours.

Label shares: the distribution of the original generator (its committed label histograms, 2^15
samples each; rounded to whole percent).

Test losses. ``POST_TEST_LOSS`` is the table of the post itself (``blog.md`` in the repository
github.com/awestover/transformer-shortest-paths). Its two on-path values match the committed
outputs of a 6-layer run (notebook at commit 0e78a41); its three any-target values appear in no
committed output: that 6-layer run printed ``COMMITTED_SIX_LAYER_TEST_LOSS`` instead.
``ELEVEN_LAYER_TEST_LOSS`` are the committed outputs of the 11-layer run whose training curves the
post shows (commit 7f3f049). All are test MSEs at n <= 15 (fine-tuning graphs n <= 7), on one fresh
batch of 2^15 examples each.
"""
ORIGINAL_LABEL_SHARES = {
    "pretrain": {1: 0.22, 2: 0.20, 3: 0.14, 4: 0.09, 5: 0.07, 6: 0.05, 7: 0.015, 8: 0.004, 15: 0.21},
    "finetune": {1: 0.54, 2: 0.29, 3: 0.12, 4: 0.05, 5: 0.005},
    "test-onpath-small-target": {1: 0.52, 2: 0.29, 3: 0.12, 4: 0.046, 5: 0.016, 6: 0.005, 7: 0.002},
}
ORIGINAL_UNREACHABLE_SHARE = {"test-any-small-graphs": 0.58, "test-any-small-target": 0.46, "test-any-large": 0.66}

POST_TEST_LOSS = {"test-onpath-small-target": 0.1020, "test-onpath": 0.1451, "test-any-small-graphs": 61.44,
                  "test-any-small-target": 47.06, "test-any-large": 72.87}
COMMITTED_SIX_LAYER_TEST_LOSS = {"test-onpath-small-target": 0.1020, "test-onpath": 0.1451,
                                 "test-any-small-graphs": 62.72, "test-any-small-target": 47.90,
                                 "test-any-large": 71.75}
ELEVEN_LAYER_TEST_LOSS = {"test-onpath-small-target": 0.0969, "test-onpath": 0.1302,
                          "test-any-small-graphs": 65.93, "test-any-small-target": 52.19, "test-any-large": 81.48}
POST_PRETRAIN_LOSS = 0.001623      # 11 layers, 9,600 steps of 2^15 examples
POST_FINETUNE_LOSS = 0.01472       # 6 layers, 100 steps of 2^15 on-path examples
