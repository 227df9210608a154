"""The training loop: a plain accelerate loop the compression engine can step into.

Why not `transformers.Trainer`: compression needs to own the step (mask enforcement after
every optimizer step, a distillation loss from cached teacher outputs). A short explicit
loop shows that order plainly, where a Trainer would need a subclass plus callbacks.

The batches go through `accelerator.prepare` as a DataLoader over the step plan, so under
`accelerate launch --num_processes N` each process trains on every N-th batch of the plan
(the plan's batch size is per process; gradients are averaged) and one process is the same
loop as always. Each batch carries its row indices (a plain list, so reading them needs no
device sync): the teacher cache looks rows up by them.

On an accelerator the host must never wait for the device inside the loop: batches are
pinned and copied asynchronously, and the loss is reduced and read back once every
`log_every` steps (one sync per window, every step's value still recorded). Under bf16/fp16 on
a GPU batches are padded to a multiple of 8 tokens (tensor-core tile sizes, as run_qa does); a
CPU has no such tiles, and the QA head scores padded positions too, so there it would only cost
time and move the loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration
from transformers import get_linear_schedule_with_warmup, set_seed

from zoo.batching import collate, length_grouped_batches, random_batches
from zoo.engine import Manager
from zoo.profiles import TrainConfig
from zoo.recipe import Recipe
from zoo.task import FeatureSet

StepCallback = Callable[[int, float], None]  # (step, loss)


@dataclass
class TrainStats:
    steps: int = 0
    features_seen: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    mixed_precision: str = "no"  # what the run trained in (effective_precision), not only what was asked

    def summary(self) -> dict:
        tail = self.losses[-50:]
        return {
            "steps": self.steps,
            "mixed_precision": self.mixed_precision,
            "features_seen": self.features_seen,
            "seconds": round(self.seconds, 2),
            "features_per_second": round(self.features_seen / self.seconds, 3) if self.seconds else None,
            "first_loss": round(self.losses[0], 4) if self.losses else None,
            "final_loss_mean50": round(sum(tail) / len(tail), 4) if tail else None,
        }


def batch_plan(features: FeatureSet, cfg: TrainConfig) -> list[list[int]]:
    """Row indices of every optimizer step, epochs of shuffled batches concatenated. The length
    is `cfg.max_steps` when set (running past `epochs` if needed, as HF Trainer's max_steps
    does), else `epochs` worth of steps (a fractional epoch is cut)."""
    steps_per_epoch = math.ceil(len(features.rows) / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps is not None else max(1, round(cfg.epochs * steps_per_epoch))
    plan: list[list[int]] = []
    epoch = 0
    while len(plan) < total and steps_per_epoch:
        seed = cfg.seed + epoch
        if cfg.group_by_length:
            plan += length_grouped_batches(features.lengths, cfg.batch_size, seed)
        else:
            plan += random_batches(len(features.rows), cfg.batch_size, seed)
        epoch += 1
    return plan[:total]


class StepPlan(torch.utils.data.Sampler):
    """The plan as a DataLoader batch sampler. No `batch_size` attribute: batches vary in size
    (length grouping, a cut last batch), so accelerate shards whole batches, never splits them."""

    def __init__(self, plan: list[list[int]]):
        self.plan = plan

    def __iter__(self):
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def process_state() -> PartialState:
    """This process of a distributed launch (`accelerate launch`, `torchrun`), or the only one.
    accelerate joins CPU processes into one group (gloo) only when told cpu=True."""
    return PartialState(cpu=not torch.cuda.is_available())


def effective_precision(requested: str) -> str:
    """The precision a run trains in. bf16 autocast on a CPU only where the CPU does bf16 in
    hardware (AVX512-BF16 or AMX; zoo.engines.cpu_facts): elsewhere bf16 is emulated and slower
    than fp32, so such a CPU trains in fp32. Measured by `zoo bench train --compare precision`
    (results/bench/train-precision-cpu.json): on a 2-vCPU AMD EPYC with AVX512-BF16, MiniLM SQuAD
    batch 16 x 256, 2 threads, a quiet machine, bf16 autocast trained 1.36x the fp32 features/s
    (median of 3 interleaved rounds), loss within 0.06 of fp32's; SQuAD cells trained both ways
    scored the same F1 within 0.35 (recipes/squad-matrix.yaml), so the SQuAD cpu matrix asks for bf16."""
    if requested == "bf16" and not torch.cuda.is_available():
        from zoo.engines import cpu_facts

        return "bf16" if cpu_facts()["bf16_hardware"] else "no"
    return requested


PAD_MULTIPLE = 8  # under bf16/fp16 on a GPU: sequence lengths tensor cores tile without remainder


def plan_loader(features: FeatureSet, plan: list[list[int]], pad_to: int | None, pad_id: int,
                pad_multiple: int | None = None) -> torch.utils.data.DataLoader:
    """Batches of (row indices, collated tensors) in plan order, pinned when a GPU will read
    them. The loader gets its own generator: one drawn from the global RNG would shift every
    dropout mask after it."""
    def collate_rows(indices: list[int]) -> tuple[list[int], dict[str, torch.Tensor]]:
        return list(indices), collate([features.rows[i] for i in indices], pad_to=pad_to, pad_id=pad_id, multiple=pad_multiple)

    return torch.utils.data.DataLoader(range(len(features.rows)), batch_sampler=StepPlan(plan), collate_fn=collate_rows,
                                       generator=torch.Generator(), pin_memory=torch.cuda.is_available())


@contextmanager
def dropout_set_to(model: torch.nn.Module, p: float | None) -> Iterator[None]:
    """Every nn.Dropout of `model` at probability `p` inside the block (None: as configured),
    restored after. BERT's attention reads its probability from its Dropout module too, and
    passes 0 to sdpa when it is 0, which on a CPU lets sdpa use its fused kernel instead of
    materialising the attention matrix to drop from it."""
    modules = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)] if p is not None else []
    kept = [m.p for m in modules]
    for m in modules:
        m.p = p
    try:
        yield
    finally:
        for m, old in zip(modules, kept):
            m.p = old


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and LayerNorm weights (standard BERT fine-tuning)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    model: torch.nn.Module,
    features: FeatureSet,
    cfg: TrainConfig,
    plan: list[list[int]] | None = None,
    pad_to: int | None = None,
    pad_id: int = 0,
    on_step: StepCallback | None = None,
    manager: Manager | None = None,
) -> tuple[torch.nn.Module, TrainStats]:
    """Train on `features` following `plan` (default: `batch_plan`); returns the unwrapped model.

    `manager` is the compression engine (zoo/engine.py), already `prepare`d on the model;
    without one this is a plain fine-tune. `pad_to` pads every batch to a fixed length
    instead of the batch's longest row: only the throughput benchmark uses it, as the
    run_qa-style baseline.
    """
    set_seed(cfg.seed)
    manager = manager or Manager(Recipe(), ())
    plan = plan if plan is not None else batch_plan(features, cfg)
    # accelerate keeps one process-wide state and refuses a second precision in the same process
    # (a matrix that trains fp32 cells after a bf16 teacher, or the test suite); each run sets its own.
    AcceleratorState._reset_state()
    process_state()
    precision = effective_precision(cfg.mixed_precision)
    accelerator = Accelerator(mixed_precision=precision, dataloader_config=DataLoaderConfiguration(non_blocking=True))
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                                  fused=True if cfg.optimizer == "adamw_fused" else None)  # None: torch's default, the per-tensor loop on a CPU
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * len(plan)), len(plan))
    # The schedule counts plan batches; with N processes accelerate steps it N times per step.
    model, optimizer, scheduler, loader = accelerator.prepare(model, optimizer, scheduler, plan_loader(
        features, plan, pad_to, pad_id, PAD_MULTIPLE if precision != "no" and torch.cuda.is_available() else None))
    inner_optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper steps the inner one
    manager.on_train_start(accelerator.unwrap_model(model), inner_optimizer, len(loader))
    model.train()
    stats = TrainStats(mixed_precision=precision)
    started = time.perf_counter()
    extra_inputs = manager.model_kwargs()
    window: list[torch.Tensor] = []  # this window's losses, still on the device

    def read_losses() -> None:
        """One reduce over the processes and one device->host copy for the whole window."""
        stats.losses.extend(accelerator.reduce(torch.stack(window), reduction="mean").tolist())  # every process's batch
        window.clear()
        if on_step:
            on_step(stats.steps, stats.losses[-1])

    with dropout_set_to(model, cfg.dropout):
        for step, (indices, batch) in enumerate(loader):
            manager.before_step(step)
            outputs = model(**batch, **extra_inputs)
            with accelerator.autocast():  # the teacher's forward and the loss terms in the run's precision, like the student's
                loss = manager.loss(outputs.loss, outputs, batch, indices)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            stats.steps += 1
            window.append(loss.detach().float())
            if len(window) == cfg.log_every:
                read_losses()
    if window:
        read_losses()
    stats.seconds = time.perf_counter() - started
    stats.features_seen = sum(len(b) for b in plan[: stats.steps * accelerator.num_processes])
    # without accelerate's autocast wrapper: the model is scored and exported as saved (fp32), like the teacher it is compared with
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    manager.on_train_end(model)
    return model, stats
