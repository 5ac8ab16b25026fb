"""DROCC: Deep Robust One-Class Classification (Goyal et al., ICML 2020, §3).

Normal data lie on a low-dimensional manifold, so points at distance
``r``..``gamma r`` from a training point are taken as anomalies:

    min_theta  lambda ||theta||^2 + sum_i [ l(f(x_i), normal)
               + mu * max_{r <= ||x~ - x_i|| <= gamma r} l(f(x~), anomalous) ]

Algorithm 1: ``only_ce_epochs`` epochs of the first term alone; then per
batch ``h ~ N(0, I)``, ``ascent_num_steps`` normalized gradient-ascent steps
of size ``ascent_step_size`` on the second term, each followed by the
projection onto the annulus (``project_every``: 1 = the paper, 10 = the
authors' code); then one descent step on the sum.  ``lambda`` is
``weight_decay``.  The network's logit says "higher = normal"; the anomaly
score is its negation.  The engine is ``odbench.adversarial``.
"""

from __future__ import annotations

from odbench.adversarial import DROCCMethod


class DROCC(DROCCMethod):
    name = "drocc"
    modalities = ("tabular", "image", "sequence")
    uses_negatives = False
    # small settings for the contract test: with 10 epochs and 3 steps of 0.001 the ascent barely moved and the
    # AUROC on the check's tabular draws was 1.0 / 0.86 / 0.57; these reach 1.0 / 1.0 / 0.84
    test_params = {
        "epochs": 20, "only_ce_epochs": 1, "ascent_num_steps": 5, "ascent_step_size": 0.1, "batch_size": 64, "hidden": 16,
        "lr": 1e-2,
    }  # fmt: skip
    distance = "euclidean"
