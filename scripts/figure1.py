"""Draw the paper's Figure 1(b)-(d) from what odbench measures (odbench.engine.figure1 fits, odbench.views.plots draws).

Usage: python scripts/figure1.py [out.png] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from odbench.engine.figure1 import measure
from odbench.views.plots import figure1

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("figure1.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("\n".join(figure1(measure(args.seed), args.out)))
