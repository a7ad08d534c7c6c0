"""Reliability under distributed training on CPU: 2 processes, gloo.

* DDP with ``find_unused_parameters=False`` trains every output selection (all 31 non-empty subsets
  of stem + 4 stages, with and without output norms, plus frozen / checkpointed variants): no
  unused parameters, replicas stay bit-identical, and the result matches a single-process run on
  the union of the two ranks' batches. A control model with one unused parameter must make DDP fail,
  which shows the harness would notice.
* FSDP: torch's ``FullyShardedDataParallel`` (CPU, ``device_id=cpu``), per-stage ``fully_shard``
  (FSDP2), and mmengine's ``FSDPStrategy`` with ``model_wrapper=dict(device_id=torch.device('cpu'))``
  (its default passes ``device_id=LOCAL_RANK``, a CUDA index) each run training steps that match the
  single-process reference.

Both processes run every scenario in one process group (one spawn for the whole module); each test
below checks the outcome its scenario recorded on both ranks.
"""
from __future__ import annotations

import itertools
import json
import os
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from swinv2_backbone import Swinv2Backbone
from capabilities import needs_cpu_fsdp, needs_fully_shard
from kit import TINY

WORLD = 2
STEPS = 3
SPAWN_TIMEOUT_S = 420
OUTPUT_NAMES = ("stem", "stage1", "stage2", "stage3", "stage4")
#: Every non-empty output selection: out_indices for the 15 stage subsets, out_features with 'stem'.
SELECTIONS: List[Dict] = [
    dict(out_features=names) if "stem" in names
    else dict(out_indices=tuple(OUTPUT_NAMES.index(n) - 1 for n in names))
    for r in range(1, len(OUTPUT_NAMES) + 1) for names in itertools.combinations(OUTPUT_NAMES, r)
]
DDP_CASES: Dict[str, Dict] = {
    **{f"{'-'.join(map(str, s.get('out_indices', s.get('out_features'))))}"
       f"{'' if norm else '_nonorm'}": {**s, "out_norm": norm}
       for s in SELECTIONS for norm in (True, False)},
    "frozen1_all": dict(frozen_stages=1),
    "frozen2_stage34": dict(frozen_stages=2, out_indices=(2, 3)),
    "with_cp_droppath": dict(with_cp=True, drop_path_rate=0.3, out_indices=(1, 3)),
}
REFERENCE_TOL = dict(rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- shared pieces
def batch(rank: int, step: int) -> torch.Tensor:
    """The input of ``rank`` at ``step``: different on every rank, so gradient averaging matters."""
    return torch.randn(2, 3, 36, 28, generator=torch.Generator().manual_seed(1000 * rank + step))


def loss_of(outputs) -> torch.Tensor:
    """A loss that uses every returned map."""
    return sum(o.square().mean() for o in outputs)


def build(**kw) -> Swinv2Backbone:
    """The tiny backbone with ``kw`` overrides, initialised identically on every rank."""
    torch.manual_seed(0)
    return Swinv2Backbone(**{**TINY, **kw})


def reference_weights(steps: int, start: Optional[Dict[str, torch.Tensor]] = None, **kw
                      ) -> Dict[str, torch.Tensor]:
    """Single-process SGD on the mean of both ranks' losses: what data parallelism must reproduce.

    ``start``: initial weights (default: those of :func:`build`); ``kw``: backbone overrides.
    """
    model = build(**kw).train()
    if start is not None:
        model.load_state_dict(start)
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(steps):
        optim.zero_grad()
        (sum(loss_of(model(batch(r, step))) for r in range(WORLD)) / WORLD).backward()
        optim.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_replicas_identical(model: nn.Module) -> None:
    """Every parameter is bit-identical on all ranks."""
    for name, p in model.named_parameters():
        gathered = [torch.empty_like(p) for _ in range(WORLD)]
        dist.all_gather(gathered, p.detach().contiguous())
        assert all(torch.equal(gathered[0], g) for g in gathered[1:]), f"{name} differs across ranks"


def assert_matches_reference(weights: Dict[str, torch.Tensor], ref: Dict[str, torch.Tensor]) -> None:
    """Same parameter names, values equal up to float reordering of the gradient reduction."""
    assert weights.keys() == ref.keys()
    for name, w in weights.items():
        torch.testing.assert_close(w, ref[name], **REFERENCE_TOL, msg=name)


def sgd_steps(model: nn.Module, rank: int, steps: int) -> None:
    """``steps`` SGD steps of (wrapped) ``model`` on this rank's batches; every loss must be finite."""
    optim = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for step in range(steps):
        optim.zero_grad()
        loss = loss_of(model(batch(rank, step)))
        assert torch.isfinite(loss)
        loss.backward()
        optim.step()


# ---------------------------------------------------------------------------------- scenarios
def ddp_case(kw: Dict) -> Callable[[int], None]:
    """DDP (find_unused_parameters=False) trains ``STEPS`` steps; replicas identical afterwards."""
    def run(rank: int) -> None:
        model = nn.parallel.DistributedDataParallel(build(**kw).train(), find_unused_parameters=False)
        sgd_steps(model, rank, STEPS)
        assert_replicas_identical(model.module)
    return run


def ddp_matches_reference(rank: int) -> None:
    """DDP training equals single-process training on both ranks' data."""
    model = nn.parallel.DistributedDataParallel(build().train(), find_unused_parameters=False)
    sgd_steps(model, rank, STEPS)
    assert_matches_reference({n: p.detach() for n, p in model.module.named_parameters()},
                             reference_weights(STEPS))


class WithUnusedParameter(nn.Module):
    """Control: the backbone plus a Linear layer the forward never uses.

    Args:
        backbone: The wrapped backbone.
    """

    def __init__(self, backbone: Swinv2Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor):
        return self.backbone(x)


def ddp_control_unused(rank: int) -> None:
    """Must fail: DDP without unused-parameter search on a model with an unused parameter."""
    model = nn.parallel.DistributedDataParallel(WithUnusedParameter(build()).train(),
                                                find_unused_parameters=False)
    sgd_steps(model, rank, STEPS)


def fsdp1(rank: int) -> None:
    """torch FSDP (one unit per stage) on CPU trains like the single-process reference."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from swinv2_backbone.models.blocks import SwinStage

    model = FSDP(build().train(), device_id=torch.device("cpu"), use_orig_params=True,
                 auto_wrap_policy=ModuleWrapPolicy({SwinStage}))
    sgd_steps(model, rank, STEPS)
    with FSDP.summon_full_params(model):
        weights = {n.replace("_fsdp_wrapped_module.", ""): p.detach().clone()
                   for n, p in model.named_parameters()}
    assert_matches_reference(weights, reference_weights(STEPS))


def fsdp2(rank: int) -> None:
    """``fully_shard`` per stage and at the root on CPU trains like the single-process reference."""
    from torch.distributed.fsdp import fully_shard

    model = build().train()
    for stage in model.layers:
        fully_shard(stage)
    fully_shard(model)
    sgd_steps(model, rank, STEPS)
    weights = {n: p.full_tensor().detach() for n, p in model.named_parameters()}
    assert_matches_reference(weights, reference_weights(STEPS))


def mmengine_fsdp_strategy(rank: int) -> None:
    """mmengine's FSDPStrategy (CPU device_id) prepares and trains like the reference."""
    import tempfile

    from mmengine._strategy import FSDPStrategy
    from mmengine.model import BaseModel
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    class Net(BaseModel):
        """An mmengine model whose loss uses every backbone output."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = build()

        def forward(self, inputs, data_samples=None, mode="loss"):
            return dict(loss=loss_of(self.backbone(inputs)))

    def full_weights(model: nn.Module) -> Dict[str, torch.Tensor]:
        """Unsharded backbone weights by backbone parameter name."""
        with FSDP.summon_full_params(model):
            return {n.replace("_fsdp_wrapped_module.", "").replace("backbone.", "", 1): p.detach().clone()
                    for n, p in model.named_parameters()}

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))
    with tempfile.TemporaryDirectory() as work_dir:
        strategy = FSDPStrategy(work_dir=work_dir, model_wrapper=dict(
            type="MMFullyShardedDataParallel", device_id=torch.device("cpu"), use_orig_params=True))
        model, optim_wrapper = strategy.prepare(
            Net(), optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1)))
        start = full_weights(model)  # prepare() runs init_weights() (rank 0's draw, broadcast)
        for step in range(STEPS):
            losses = model.train_step(dict(inputs=batch(rank, step)), optim_wrapper)
            assert torch.isfinite(losses["loss"])
    assert_matches_reference(full_weights(model), reference_weights(STEPS, start))


SCENARIOS: List[Tuple[str, Callable[[int], None]]] = (
    [(f"ddp:{name}", ddp_case(kw)) for name, kw in DDP_CASES.items()]
    + [("ddp_reference", ddp_matches_reference), ("fsdp1", fsdp1), ("fsdp2", fsdp2),
       ("mmengine_fsdp", mmengine_fsdp_strategy),
       ("ddp_control_unused", ddp_control_unused)]  # last: it leaves a reducer mid-iteration
)


def _worker(rank: int, store: str, out_dir: str) -> None:
    """One rank: run every scenario, record 'ok' or the error, write ``rank{rank}.json``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=120))
    results = {}
    for name, scenario in SCENARIOS:
        try:
            scenario(rank)
            results[name] = "ok"
        except Exception as exc:  # recorded, asserted by the tests in the parent
            results[name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> Dict[str, List[str]]:
    """Scenario name -> the outcome on each rank (one 2-process spawn for the whole module)."""
    out_dir = tmp_path_factory.mktemp("dist")
    context = mp.start_processes(_worker, args=(str(out_dir / "store"), str(out_dir)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not context.join(timeout=max(deadline - time.monotonic(), 0.0)):  # True: all joined
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the {WORLD} ranks did not finish in {SPAWN_TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    per_rank = [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return {name: [per_rank[r][name] for r in range(WORLD)] for name, _ in SCENARIOS}


def assert_ok(outcomes: Dict[str, List[str]], name: str) -> None:
    """Scenario ``name`` succeeded on every rank (else show each rank's error)."""
    assert outcomes[name] == ["ok"] * WORLD, "\n".join(outcomes[name])


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DDP_CASES))
def test_ddp_without_unused_parameter_search_trains_every_output_choice(outcomes, case):
    assert_ok(outcomes, f"ddp:{case}")


@pytest.mark.slow
def test_ddp_matches_single_process_training(outcomes):
    assert_ok(outcomes, "ddp_reference")


@pytest.mark.slow
def test_ddp_control_with_an_unused_parameter_fails(outcomes):
    """The harness notices unused parameters: DDP refuses the step after the one that left the
    extra Linear without a gradient."""
    for outcome in outcomes["ddp_control_unused"]:
        assert outcome.startswith("RuntimeError") and "unused" in outcome.lower()


@pytest.mark.slow
@needs_cpu_fsdp
@pytest.mark.parametrize("scenario", ["fsdp1", pytest.param("fsdp2", marks=needs_fully_shard),
                                      "mmengine_fsdp"])
def test_fsdp_training_steps_on_cpu_match_single_process_training(outcomes, scenario):
    assert_ok(outcomes, scenario)


def test_every_output_selection_is_covered():
    assert len(SELECTIONS) == 2 ** len(OUTPUT_NAMES) - 1
    assert sum("out_indices" in s for s in SELECTIONS) == 15
