"""DROCC's building blocks: projections onto N(r), the adversarial ascent, the objective."""
