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


def save_checkpoint(ckpt: Path, state: RunState, student, proj, opt, sched) -> None:
    import torch
    from safetensors.torch import save_file

    clean_stale(ckpt)
    with replacing(ckpt) as tmp:
        tmp.mkdir()
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(tmp / "student.safetensors"))
        if proj is not None:
            save_file(proj.state_dict(), str(tmp / "proj.safetensors"))
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()},
                   tmp / "optim.pt")
        atomic_write_json(tmp / "state.json", asdict(state))
        follow_umask(tmp)


def load_checkpoint(ckpt: Path, state: RunState, student, proj, opt, sched) -> bool:
    """Load ``ckpt`` into the models, optimizer and ``state`` (in place); False when there is none."""
    import torch
    from safetensors.torch import load_file

    if not (ckpt / "state.json").exists():
        return False
    saved = json.loads((ckpt / "state.json").read_text())
    for name, value in saved.items():
        if name in ("counters", "times"):
            getattr(state, name).update(value)  # in place: the step and the scorers count into these
        else:
            setattr(state, name, value)
    student.load_state_dict(load_file(str(ckpt / "student.safetensors")), strict=True)
    if proj is not None:
        proj.load_state_dict(load_file(str(ckpt / "proj.safetensors")))
    extra = torch.load(ckpt / "optim.pt", weights_only=True)
    opt.load_state_dict(extra["optimizer"])
    sched.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"])
    return True


def kept(ckpt: Path, state: RunState) -> str:
    """What a stopped run leaves the user: never a student, perhaps the last good checkpoint."""
    last = f"{ckpt} holds epoch {state.epoch}" if (ckpt / "state.json").exists() else "no checkpoint was made"
    return f"no student was saved and {last}"
