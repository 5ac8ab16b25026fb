"""DROCC-OE: DROCC plus outlier exposure to limited negatives (paper §4).

For one-class classification with limited negatives (OCLN): the DROCC loss
over the normal points plus the standard cross-entropy over the labelled
negatives of the training split (``y = 1``)::

    sum_i l(f(x_i), y_i) + mu * sum_{i normal} max_{x~ in N_i(r)} l(f(x~), anomalous)

with the Euclidean annulus ``N_i(r)`` of DROCC.  Same parameters as ``drocc``.
"""

from __future__ import annotations

from odbench.adversarial import DROCCMethod


class DROCCOE(DROCCMethod):
    name = "drocc_oe"
    modalities = ("tabular", "image", "sequence")
    uses_negatives = True
    # small settings for the contract test (as drocc's; with 4 epochs the adversarial term had no time to act)
    test_params = {
        "epochs": 20, "only_ce_epochs": 1, "ascent_num_steps": 5, "ascent_step_size": 0.1, "batch_size": 64, "hidden": 16,
        "lr": 1e-2,
    }  # fmt: skip
    distance = "euclidean"
