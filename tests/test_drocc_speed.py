"""The numerics behind DROCC's fast path: bf16 ascent, batch-free scoring.

Speed itself is measured by ``scripts/bench_drocc.py``, never here; these
tests check that the faster code computes what the plain fp32 loop does.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from odbench.api import DataInfo, FitContext, Split
from odbench.core.metrics import evaluate
from odbench.deep import nets
from odbench.deep.freezing import batchnorm_stats_frozen
from odbench.deep.scoring_modes import inference_network
from odbench.deep.training import low_precision_forward, score_array
from odbench.devkit.testing import obvious_outlier_task
from odbench.drocc.ascent import adversarial_search
from odbench.drocc.objective import DROCCObjective
from odbench.drocc.projections import annulus_project


def _lenet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return nets.build("lenet_mnist", (1, 16, 16), out_dim=1).train()


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 1, 16, 16, generator=g), torch.randn(32, 1, 16, 16, generator=g)


def test_bf16_ascent_moves_offsets_by_the_full_small_step_in_fp32() -> None:
    # eta = 0.001 on offsets of size ~1 is below bf16's resolution (2^-8): were h bf16, most of the step would round away
    model, (x, h0) = _lenet(), _batch()
    with batchnorm_stats_frozen(model):
        moved = adversarial_search(model, x, h0, lambda h: h, 0.001, 1, precision="bf16")
        exact = adversarial_search(model, x, h0, lambda h: h, 0.001, 1, precision="fp32")
    assert moved.dtype == torch.float32
    step = (moved - x - h0).flatten(1)
    assert torch.allclose(step.norm(dim=1), torch.full((32,), 0.001), rtol=1e-3)
    # and it goes the fp32 ascent's way: bf16 changes the gradient's digits, not its direction
    cosine = F.cosine_similarity(step, (exact - x - h0).flatten(1), dim=1)
    assert cosine.min() > 0.95


def test_fp32_ascent_equals_the_plain_loop() -> None:
    """The search (no host reads, fp32) computes the authors' update: normalized gradient steps, projection every k."""
    model, (x, h0) = _lenet(), _batch(1)
    radius, gamma, eta, steps, every = 4.0, 2.0, 0.1, 7, 3
    with batchnorm_stats_frozen(model):
        ours = adversarial_search(model, x, h0, lambda h: annulus_project(h, radius, gamma), eta, steps, every)
        h = h0.clone()
        for i in range(steps):
            h.requires_grad_(True)
            loss = F.binary_cross_entropy_with_logits(model(x + h).reshape(-1), torch.zeros(32), reduction="sum")
            (g,) = torch.autograd.grad(loss, [h], allow_unused=False)
            for p in model.parameters():
                p.grad = None
            norms = g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            h = (h + eta * g / norms).detach()
            if (i + 1) % every == 0 or i == steps - 1:
                n = h.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                h = h * n.clamp(radius, gamma * radius) / n
    assert torch.allclose(ours, x + h, atol=1e-5)


def test_low_precision_forward_casts_a_copy_and_leaves_the_model_fp32() -> None:
    model, (x, _) = _lenet(), _batch()
    assert low_precision_forward(model, "fp32") is model
    forward = low_precision_forward(model, "bf16")
    out = forward(x)
    assert out.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(b.dtype == torch.float32 for b in model.buffers() if b.is_floating_point())  # BatchNorm's running statistics stay fp32
    assert torch.allclose(out.float(), model(x), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_scores_do_not_depend_on_the_batch(precision: str) -> None:
    model, info = _lenet(), DataInfo("i", "image", (1, 16, 16), 10, "lenet_mnist")
    with torch.no_grad():  # running statistics unlike any one batch's
        for _ in range(3):
            model(3 * torch.randn(64, 1, 16, 16))
    X = np.random.default_rng(0).standard_normal((100, 1, 16, 16)).astype(np.float32)
    objective = DROCCObjective(method=None)  # type: ignore[arg-type]  # scoring reads no parameter
    cpu = torch.device("cpu")
    whole = score_array(objective, model, X, info, cpu, 1024, precision)
    order = np.random.default_rng(1).permutation(100)
    pieces = np.empty(100)
    pieces[order] = score_array(objective, model, X[order], info, cpu, 7, precision)
    assert np.allclose(whole, pieces, atol=1e-2 if precision == "bf16" else 1e-5)


def _trained_cifar_lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = nets.build("lenet_cifar", (3, 32, 32), out_dim=1).train()
    with torch.no_grad():  # running statistics far from BatchNorm's start (mean 0, var 1)
        for _ in range(3):
            model(1 + 3 * torch.randn(64, 3, 32, 32))
    return model.eval()


class _WithCentres(torch.nn.Module):
    """A conv net and a buffer its objective writes while scoring (as GOAD's centres, DAGMM's mixture)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("centres", torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_scoring_copy_folds_batchnorm_pools_before_activating_and_keeps_the_function() -> None:
    model = _trained_cifar_lenet()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    scoring = inference_network(model)
    kinds = [type(m) for m in scoring.features]
    assert torch.nn.BatchNorm2d not in kinds  # folded into the convolutions
    pool, act = torch.nn.MaxPool2d, torch.nn.LeakyReLU
    assert [k for k in kinds if k in (pool, act)] == [pool, act] * 3  # every block pools, then activates
    x = torch.randn(50, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain, folded = model(x), scoring(x)
    assert torch.allclose(folded, plain, rtol=1e-5, atol=1e-6 * plain.abs().max().item())  # float32 rounding only
    # the original is left as it was: its modules, its mode, its weights and statistics
    assert torch.nn.BatchNorm2d in [type(m) for m in model.features] and not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # what the copy does not rewrite is the original's own tensor: a buffer written while scoring reaches it
    wrapped = _WithCentres(model)
    inference_network(wrapped).centres.copy_(torch.tensor([1.0, 2.0, 3.0]))
    assert wrapped.centres.tolist() == [1.0, 2.0, 3.0]


def test_pooling_before_a_monotone_activation_is_exact() -> None:
    torch.manual_seed(0)
    pool, leaky, relu = torch.nn.MaxPool2d, torch.nn.LeakyReLU, torch.nn.ReLU
    layers = torch.nn.Sequential(leaky(0.01), pool(2, 2), relu(), pool(2, 2))
    swapped = inference_network(layers)
    assert [type(m) for m in swapped] == [pool, leaky, pool, relu]
    x = torch.randn(8, 4, 16, 16)
    assert torch.equal(swapped(x), layers(x))  # bit for bit: a non-decreasing map commutes with a max


def test_score_array_scores_through_the_scoring_copy() -> None:
    model, info = _trained_cifar_lenet(), DataInfo("i", "image", (3, 32, 32), 10, "lenet_cifar")
    X = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(np.float32)
    objective = DROCCObjective(method=None)  # type: ignore[arg-type]  # scoring reads no parameter
    scores = score_array(objective, model, X, info, torch.device("cpu"), 1024, "fp32")
    with torch.no_grad():
        expected = objective.score(inference_network(model), torch.as_tensor(X)).double().numpy()
        module_by_module = objective.score(model, torch.as_tensor(X)).double().numpy()
    assert np.array_equal(scores, expected)
    assert not np.array_equal(scores, module_by_module)  # the fold moves float32 rounding: the copy is what ran
    assert np.allclose(scores, module_by_module, rtol=1e-5, atol=1e-6)


SHIFT = 0.1


def _moderate_image_task(seed: int = 0):
    """Normals N(0, 0.3^2) against anomalies shifted by 0.15 in every pixel: separable, not trivially."""
    task = obvious_outlier_task("image", seed=seed, n_train=256, n_test=400)
    rng = np.random.default_rng(seed)

    def redraw(split: Split) -> Split:
        shift = np.where(split.y == 1, SHIFT, 0.0).reshape(-1, 1, 1, 1)
        return replace(split, X=(shift + 0.3 * rng.standard_normal(split.X.shape)).astype(np.float32))

    return replace(task, train=redraw(task.train), val=redraw(task.val), test=redraw(task.test))


@pytest.mark.slow
def test_bf16_training_gives_the_auroc_of_fp32() -> None:
    from odbench.engine.registry import Registry

    task = _moderate_image_task()
    cls = Registry().method("drocc")
    params = {**cls.default_params(task.info), "epochs": 6, "ascent_num_steps": 5, "ascent_step_size": 0.01,
              "batch_size": 64, "lr": 1e-3, "only_ce_epochs": 1}  # fmt: skip
    aurocs = {}
    for precision in ("fp32", "bf16"):
        method = cls(**{**params, "precision": precision}).fit(task.for_fit(), FitContext(seed=0))
        assert method.runtime.precision == precision  # the record's params say what ran
        aurocs[precision] = evaluate(("auroc",), task.test.y, method.anomaly_score(task.test.X))["auroc"]
    assert aurocs["fp32"] > 0.65  # the problem is learnable: the comparison means something
    assert abs(aurocs["bf16"] - aurocs["fp32"]) < 0.03


def test_auto_precision_is_bf16_only_for_conv_nets_on_native_bf16_hardware() -> None:
    from odbench.deep.precision import cpu_has_native_bf16, resolve_precision

    lenet, mlp = _lenet(), nets.build("mlp", (6,))
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object only: nothing runs on it
    assert resolve_precision("auto", lenet, cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("auto", lenet, gpu) == "bf16"
    assert resolve_precision("auto", mlp, cpu) == resolve_precision("auto", mlp, gpu) == "fp32"
    assert resolve_precision("bf16", mlp, cpu) == "bf16" and resolve_precision("fp32", lenet, gpu) == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", lenet, cpu)


def test_a_drocc_record_states_the_precision_that_ran(tmp_path, monkeypatch) -> None:
    from odbench.cli import main
    from odbench.deep.precision import cpu_has_native_bf16
    from odbench.engine.store import Store

    rng = np.random.default_rng(0)
    images = lambda n: rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8)  # noqa: E731
    np.savez(tmp_path / "tiny.npz", X_train=images(40), y_train=np.repeat([0, 1], 20),
             X_test=images(20), y_test=np.repeat([0, 1], 10))  # fmt: skip
    monkeypatch.setenv("ODBENCH_TRUST_LOCAL_FILES", "1")
    results = tmp_path / "r"
    for dataset in (f"npz:{tmp_path / 'tiny.npz'}", "sine2d"):
        argv = ["run", "--methods", "drocc", "--datasets", dataset, "--classes", "0", "--device", "cpu", "--no-mlflow",
                "--results", str(results), "--param", "drocc.epochs=2", "--param", "drocc.only_ce_epochs=0",
                "--param", "drocc.ascent_num_steps=1"]  # fmt: skip
        assert main(argv) == 0
    ran = {r["dataset"].split(":")[0]: r["params"]["precision"] for r in Store(results).records()}
    # the default is "auto"; the record says what it became: bf16 for the LeNet where it is native, fp32 for the MLP
    assert ran == {"npz": "bf16" if cpu_has_native_bf16() else "fp32", "sine2d": "fp32"}


def test_auto_precision_is_settled_wherever_a_deep_method_runs() -> None:
    # DROCC's loss on its own (prepare), and any deep method given "auto" (the shared training loop)
    from odbench.deep.precision import cpu_has_native_bf16
    from odbench.engine.registry import Registry

    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    registry = Registry()
    info = DataInfo("i", "image", (1, 16, 16), 10, "lenet_mnist")
    assert registry.method("drocc")().prepare(info).runtime.precision == expected
    task = obvious_outlier_task("image")
    deepsvdd = registry.method("deepsvdd")(epochs=1, precision="auto").fit(task.for_fit(), FitContext(seed=0))
    assert deepsvdd.runtime.precision == deepsvdd.config_.precision == expected
