"""A job's GPU memory bound and what counts as running out of it (the Ray executor reruns such a job alone)."""

from __future__ import annotations

import pytest
import torch

from odbench.engine.devices import bound_gpu_memory, gpu_out_of_memory


def _error(err: Exception) -> dict[str, str]:
    return {"type": type(err).__name__, "message": str(err)}


def test_out_of_gpu_memory_is_told_from_other_failures():
    assert gpu_out_of_memory(_error(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")))
    assert gpu_out_of_memory(_error(RuntimeError("CUDA error: out of memory")))  # older torch, some kernels
    assert not gpu_out_of_memory(_error(RuntimeError("expected scalar type Float")))
    assert not gpu_out_of_memory(_error(ValueError("out of memory")))  # not torch's
    assert not gpu_out_of_memory(_error(MemoryError()))  # the host's memory: no GPU rerun helps


def test_no_bound_off_the_gpu():
    assert not bound_gpu_memory("cpu", 0.25)
    assert not bound_gpu_memory("cuda", 0.0)  # a job that declared no GPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here: the bound is untested on this machine)")
def test_a_jobs_gpu_memory_is_bounded_by_its_share():
    total = torch.cuda.get_device_properties(0).total_memory
    assert bound_gpu_memory("cuda", 0.1)
    try:
        with pytest.raises(torch.cuda.OutOfMemoryError):
            torch.empty(int(total * 0.2), dtype=torch.uint8, device="cuda")
        torch.cuda.empty_cache()
        assert bound_gpu_memory("cuda", 1.0)  # the next job's share lifts the bound
        block = torch.empty(int(total * 0.2), dtype=torch.uint8, device="cuda")
        del block
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
