"""DROCC-OE: DROCC plus outlier exposure to limited negatives (paper §4).

For one-class classification with limited negatives (OCLN): the DROCC loss
over the normal points plus the standard cross-entropy over the labelled
negatives of the training split (``y = 1``)::

    sum_i l(f(x_i), y_i) + mu * sum_{i normal} max_{x~ in N_i(r)} l(f(x~), anomalous)

with the Euclidean annulus ``N_i(r)`` of DROCC.  Same parameters as ``drocc``.
"""

from __future__ import annotations

from odbench.drocc.method import DROCCMethod


class DROCCOE(DROCCMethod):
    name = "drocc_oe"
    modalities = ("tabular", "image", "sequence")
    uses_negatives = True
    # tiny settings for the contract test
    test_params = {"epochs": 4, "only_ce_epochs": 1, "ascent_num_steps": 3, "batch_size": 64, "hidden": 16, "lr": 1e-2}
    distance = "euclidean"
