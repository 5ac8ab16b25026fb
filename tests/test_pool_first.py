"""The LeNets' pool-first conv blocks compute what their modules compute one after another.

``odbench.deep.pool_first`` max-pools before BatchNorm and LeakyReLU and
gives BatchNorm's batch statistics their gradient in closed form; these
tests hold it to the module-order net: outputs, input and weight
gradients, running statistics, in train and eval mode, fp32 and bf16.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from odbench.deep import nets
from odbench.deep.pool_first import pool_first_forward
from odbench.deep.training import low_precision_forward


def _module_order(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The LeNet's layers run one after another: conv, BatchNorm, LeakyReLU, then pool."""
    return lambda x: model.head(model.features(x))  # type: ignore[operator]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max() / b.detach().double().abs().max().clamp_min(1e-30))


# 16x16 pools to 8 then 4; 14x14 to 7 then 3 (the odd 7 drops a row and a column that the statistics still count)
NETS = [("lenet_cifar", (3, 16, 16)), ("lenet_mnist", (1, 14, 14))]


def _pair(name: str, shape: tuple[int, ...], channels_last: bool) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = nets.build(name, shape, out_dim=1)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model.train(), copy.deepcopy(model).train()


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(("name", "shape"), NETS, ids=[n for n, _ in NETS])
def test_train_mode_equals_the_module_order(name: str, shape: tuple[int, ...], channels_last: bool) -> None:
    ours, theirs = _pair(name, shape, channels_last)
    x = torch.randn(48, *shape, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    results = []
    for model, forward in ((ours, ours), (theirs, _module_order(theirs))):
        h = torch.zeros_like(x).requires_grad_(True)
        out = forward(x + h).reshape(-1)
        loss = F.binary_cross_entropy_with_logits(out.sin(), torch.rand(48, generator=torch.Generator().manual_seed(2)))
        loss.backward(inputs=[h, *model.parameters()])
        bn = model.features[1]
        results.append(
            [out.detach(), h.grad, *[p.grad for p in model.parameters()], bn.running_mean, bn.running_var]
            + [float(bn.num_batches_tracked)]
        )
    *tensors_ours, count_ours = results[0]
    *tensors_theirs, count_theirs = results[1]
    assert count_ours == count_theirs == 1
    for a, b in zip(tensors_ours, tensors_theirs, strict=True):
        assert _rel(a, b) < 1e-5


@pytest.mark.parametrize(("name", "shape"), NETS, ids=[n for n, _ in NETS])
def test_eval_mode_equals_the_module_order(name: str, shape: tuple[int, ...]) -> None:
    ours, theirs = _pair(name, shape, channels_last=False)
    x = torch.randn(64, *shape, generator=torch.Generator().manual_seed(3))
    for model in (ours, theirs):  # running statistics away from their initial 0 / 1
        model(x * 3 + 1)
        model.eval()
    with torch.inference_mode():
        assert _rel(ours(x), _module_order(theirs)(x)) < 1e-5


def test_bf16_input_gradient_is_as_close_to_float64_as_the_module_orders() -> None:
    # bf16 moves both away from the float64 gradient (by ~15% here); pooling first must not move it further
    ours, theirs = _pair("lenet_cifar", (3, 16, 16), channels_last=True)
    exact_model = copy.deepcopy(theirs).double()
    x = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(4))

    def input_gradient(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros_like(x).requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.sigmoid(forward(x + h).double()).sum(), [h])
        return grad.double()

    exact = input_gradient(_module_order(exact_model), x.double())
    err_ours = (input_gradient(low_precision_forward(ours, "bf16"), x) - exact).norm() / exact.norm()
    bf16_theirs = low_precision_forward(theirs, "bf16")
    theirs.forward = _module_order(theirs)  # type: ignore[method-assign]  # functional_call runs this forward
    err_theirs = (input_gradient(bf16_theirs, x) - exact).norm() / exact.norm()
    assert err_ours < 1.1 * err_theirs + 1e-3


def test_the_lenets_take_the_pooled_path() -> None:
    # the mechanism itself: the fused block never calls BatchNorm's module, and its backward is the closed form
    model, _ = _pair("lenet_cifar", (3, 16, 16), channels_last=False)
    calls: list[str] = []
    model.features[1].register_forward_hook(lambda *_: calls.append("bn"))
    out = model(torch.randn(8, 3, 16, 16))
    assert calls == []
    seen, stack = set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack.extend(next_fn for next_fn, _ in fn.next_functions)
    assert "_PooledBatchNormBackward" in {type(fn).__name__ for fn in seen}


@pytest.mark.parametrize(
    "block",
    [
        lambda: [nn.BatchNorm2d(4, affine=True), nn.LeakyReLU(), nn.MaxPool2d(2)],  # a learned scale may be negative
        lambda: [nn.BatchNorm2d(4, momentum=None), nn.LeakyReLU(), nn.MaxPool2d(2)],  # cumulative averaging
        lambda: [nn.BatchNorm2d(4), nn.LeakyReLU(), nn.MaxPool2d(3)],
        lambda: [nn.BatchNorm2d(4), nn.Tanh(), nn.MaxPool2d(2)],
    ],
    ids=["affine", "cumulative-momentum", "pool-3", "tanh"],
)
def test_blocks_that_do_not_match_run_as_their_modules(block: Callable[[], list[nn.Module]]) -> None:
    torch.manual_seed(0)
    layers = nn.Sequential(nn.Conv2d(2, 4, 3), *block())
    if isinstance(layers[1], nn.BatchNorm2d) and layers[1].affine:
        with torch.no_grad():
            layers[1].weight.uniform_(-1, 1)
    twin = copy.deepcopy(layers)
    x = torch.randn(8, 2, 14, 14)
    assert _rel(pool_first_forward(layers, x), twin(x)) < 1e-6
    assert torch.equal(layers[1].running_mean, twin[1].running_mean)
