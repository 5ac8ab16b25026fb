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
score is its negation.  The engine is ``odbench.drocc``.
"""

from __future__ import annotations

from odbench.drocc.method import DROCCMethod


class DROCC(DROCCMethod):
    name = "drocc"
    modalities = ("tabular", "image", "sequence")
    uses_negatives = False
    # tiny settings for the contract test (bias-free LeNets need ~4 adversarial epochs to rank scaled-up noise images)
    test_params = {"epochs": 10, "only_ce_epochs": 1, "ascent_num_steps": 3, "batch_size": 64, "hidden": 16, "lr": 1e-2}
    distance = "euclidean"
