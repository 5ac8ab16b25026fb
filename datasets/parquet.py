"""A user's Parquet table: ``parquet:PATH[?label=COLUMN&encode=onehot]``.

One row per example; the label column holds classes (one-vs-all) or a 0/1
anomaly flag (contamination).  See ``odbench.data.sources``.
"""

from odbench.data.sources import TableSource


class Parquet(TableSource):
    name = "parquet"
