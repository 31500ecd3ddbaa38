"""A run's state after every epoch, saved atomically so that --resume continues bit for bit.

RUN_DIR/checkpoint/ holds student.safetensors (+ proj.safetensors), optim.pt (optimizer, schedule,
torch RNG) and state.json (``RunState``); it is written under a temporary name and swapped in whole.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import atomic_write_json, clean_stale, replacing
from ..models import follow_umask


def _counters() -> dict:
    return {"train_rows": 0, "rescore_rows": 0, "eval_rows": 0, "teacher_forwards": 0}


def _times() -> dict:
    return {"train": 0.0, "rescore": 0.0, "eval": 0.0, "head_init": 0.0}  # head_init: a part of train


@dataclass
class RunState:
    """Where a run is: epochs and steps done, the best dev score, what it cost, the rows it trains on."""

    epoch: int = 0
    step: int = 0
    best_dev: dict | None = None
    counters: dict = field(default_factory=_counters)
    times: dict = field(default_factory=_times)
    selected_epoch: int | None = None  # dynamic selection: the epoch that chose ``active``
    active: list[int] | None = None
    head: dict | None = None  # --head-init probe: the fit that started the head
    dev_top_class: dict | None = None  # the last dev evaluation's most predicted class and its share


def save_state(folder: Path, weights: dict, opt, sched, state_name: str, state: dict) -> None:
    """Training state in ``folder``: each module's weights (NAME.safetensors), optimizer, schedule and torch
    RNG (optim.pt), and ``state`` as JSON written last; built under a temp name and swapped in whole."""
    import torch
    from safetensors.torch import save_file

    clean_stale(folder)  # what a writer killed half-way left beside it
    with replacing(folder) as tmp:
        tmp.mkdir()
        for name, module in weights.items():
            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp / f"{name}.safetensors"))
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()},
                   tmp / "optim.pt")
        atomic_write_json(tmp / state_name, state)
        follow_umask(tmp)


def load_state(folder: Path, weights: dict, opt, sched) -> None:
    """Load what ``save_state`` wrote into the modules, optimizer, schedule and torch RNG (in place)."""
    import torch
    from safetensors.torch import load_file

    for name, module in weights.items():
        module.load_state_dict(load_file(str(folder / f"{name}.safetensors")), strict=True)
    extra = torch.load(folder / "optim.pt", weights_only=True)
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"])


def _weights(student, proj) -> dict:
    return {"student": student, **({"proj": proj} if proj is not None else {})}


def save_checkpoint(ckpt: Path, state: RunState, student, proj, opt, sched) -> None:
    save_state(ckpt, _weights(student, proj), opt, sched, "state.json", asdict(state))


def load_checkpoint(ckpt: Path, state: RunState, student, proj, opt, sched) -> bool:
    """Load ``ckpt`` into the models, optimizer and ``state`` (in place); False when there is none."""
    if not (ckpt / "state.json").exists():
        return False
    saved = json.loads((ckpt / "state.json").read_text())
    for name, value in saved.items():
        if name in ("counters", "times"):
            getattr(state, name).update(value)  # in place: the step and the scorers count into these
        else:
            setattr(state, name, value)
    load_state(ckpt, _weights(student, proj), opt, sched)
    return True


def kept(ckpt: Path, state: RunState) -> str:
    """What a stopped run leaves the user: never a student, perhaps the last good checkpoint."""
    last = f"{ckpt} holds epoch {state.epoch}" if (ckpt / "state.json").exists() else "no checkpoint was made"
    return f"no student was saved and {last}"
