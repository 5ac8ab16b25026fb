"""The on-disk array cache: built once, published whole, safe when two workers build it at once."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from odbench.data.cache import cached_arrays


def _race(path: Path, expected: np.ndarray) -> list[object]:
    """Two threads build ``path`` at once; what each got back (arrays or the exception)."""
    barrier = threading.Barrier(2)
    results: list[object] = [None, None]

    def build() -> dict[str, np.ndarray]:
        barrier.wait(timeout=30)  # both start writing at the same moment
        return {"X": expected}

    def worker(i: int) -> None:
        try:
            results[i] = cached_arrays(path, build)["X"]
        except Exception as err:  # noqa: BLE001 - the finding
            results[i] = err

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_two_workers_building_the_same_cache_at_once_both_get_whole_arrays(tmp_path: Path) -> None:
    """Protects the unique temporary file per writer.

    Two threads (as two pool workers would) build the same cache and start
    writing it at the same moment.  Each must read back the whole arrays,
    and no temporary file may be left.  With one fixed temporary name the
    second writer truncates the first one's file and the first ``replace``
    takes the other's away (FileNotFoundError, or a truncated zip on read).
    """
    expected = np.arange(4_000_000, dtype=np.float32).reshape(2000, 2000)  # 16 MB: writes take a while
    for round_ in range(3):
        path = tmp_path / f"round{round_}" / "arrays.npz"
        for got in _race(path, expected):
            assert isinstance(got, np.ndarray), f"round {round_}: {got!r}"
            np.testing.assert_array_equal(got, expected)
        assert [p.name for p in path.parent.iterdir()] == ["arrays.npz"]


def test_a_failed_build_leaves_no_cache_and_no_temporary_file(tmp_path: Path) -> None:
    """Protects the clean-up: arrays that cannot be saved leave nothing behind, and the next call builds again."""
    path = tmp_path / "arrays.npz"

    class Unsaveable:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("cannot become an array")

    try:
        cached_arrays(path, lambda: {"X": Unsaveable()})
    except RuntimeError:
        pass
    assert list(tmp_path.iterdir()) == []
    np.testing.assert_array_equal(cached_arrays(path, lambda: {"X": np.ones(3)})["X"], np.ones(3))
