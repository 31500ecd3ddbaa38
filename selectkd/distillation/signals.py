"""What the student learns from: one TeacherSignal interface, two sources behind it (DistillKit's idea).

``CachedSignal`` reads a teacher's cache entry (memory-mapped logits and [CLS] states, read once);
``LiveSignal`` runs the teacher model, for token-level hidden-state alignment (its logits still come
from the cache when it has one). The trainer asks once what a source can do (``token_level``,
``forwards_per_row``) and never which source it has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..cache.arrays import column_matrix
from ..cache.store import Entry
from ..errors import CacheError, SelectKDError
from ..specs import DataSpec, ScoreSpec
from .losses import layer_map


def _score(data: DataSpec, scoring: ScoreSpec, cache_dir: str | None, progress: bool):
    """The run's one call to score(): every teacher (+ the student's scores), scored or found in the cache."""
    from ..scoring.run import score

    return score(data, scoring, cache_dir=cache_dir, progress=progress)


class TeacherSignal(ABC):
    """One teacher's outputs for the training rows, addressed by row position."""

    name: str
    key: str | None  # the cache entry the logits come from
    num_layers: int = 0
    hidden_size: int = 0
    num_parameters: int = 0
    token_level = False  # alignment targets: every token's states (B, L, T, H), else [CLS] states (B, L, H)
    forwards_per_row = 0  # teacher forwards one training row costs (0: all from the cache)

    @abstractmethod
    def logits(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), C) teacher logits."""

    @abstractmethod
    def cls_states(self, rows: np.ndarray, layers: list[int]):
        """(len(rows), len(layers), H) float32 tensor: the [CLS] state of each of ``layers`` (0: embeddings)."""

    def alignment_targets(self, rows: np.ndarray, layers: list[int], device: str):
        """What the student's states of ``layers`` are aligned to, on ``device``."""
        return self.cls_states(rows, layers).to(device)


class CachedSignal(TeacherSignal):
    """A teacher's cache entry, read once (memory-mapped), its rows in the training rows' order."""

    def __init__(self, entry: Entry, name: str, uids: np.ndarray):
        table = entry.read_parts()
        if not np.array_equal(table.column("uid").to_numpy(), uids):
            raise CacheError(f"teacher cache {entry.key} covers other rows than the training data; re-score it")
        self._logits = column_matrix(table, "logits")
        if not np.isfinite(self._logits).all():
            raise CacheError(f"teacher cache {entry.key} holds NaN or Inf logits; remove it with "
                             f"`selectkd cache rm {entry.key}` and re-score the teacher")
        manifest = entry.manifest()
        self.name, self.key = name, entry.key
        self.num_parameters = int(manifest.get("num_parameters") or 0)
        self._cls = None
        if "cls" in manifest["columns"]:
            layers_plus_one, self.hidden_size = manifest["columns"]["cls"]
            self.num_layers = layers_plus_one - 1
            self._cls = column_matrix(table, "cls").reshape(len(uids), layers_plus_one, self.hidden_size)

    def logits(self, rows: np.ndarray) -> np.ndarray:
        return self._logits[rows]

    def cls_states(self, rows: np.ndarray, layers: list[int]):
        import torch

        if self._cls is None:
            raise SelectKDError(f"teacher cache {self.key} holds no [CLS] states; score it with --cls-states")
        return torch.from_numpy(self._cls[rows][:, layers, :].astype(np.float32))


class LiveSignal(TeacherSignal):
    """A teacher model run on the training rows' own tokens (``ids``, its tokenizer's). Its logits come
    from ``cached`` when given (the numbers KD always used), else from running it."""

    token_level = True
    forwards_per_row = 1

    def __init__(self, model, pad_id: int, ids: list[list[int]], device: str, cached: CachedSignal | None = None,
                 name: str = "teacher"):
        self.model, self.pad_id, self.ids, self.device, self.cached = model, pad_id, ids, device, cached
        self.name, self.key = (cached.name, cached.key) if cached else (name, None)
        self.num_parameters = cached.num_parameters if cached else sum(p.numel() for p in model.parameters())
        self.num_layers, self.hidden_size = model.config.num_hidden_layers, model.config.hidden_size

    def run(self, rows: np.ndarray):
        """The teacher's forward on ``rows`` (every hidden state), no grad."""
        import torch

        from ..scoring.tokens import collate

        batch = {k: v.to(self.device) for k, v in collate([self.ids[i] for i in rows], self.pad_id).items()}
        with torch.inference_mode():
            return self.model(**batch, output_hidden_states=True)

    def logits(self, rows: np.ndarray) -> np.ndarray:
        if self.cached is not None:
            return self.cached.logits(rows)
        return self.run(rows).logits.float().cpu().numpy()

    def alignment_targets(self, rows: np.ndarray, layers: list[int], device: str):
        import torch

        hidden = self.run(rows).hidden_states
        return torch.stack([hidden[j] for j in layers], dim=1).clone()

    def cls_states(self, rows: np.ndarray, layers: list[int]):
        return self.alignment_targets(rows, layers, self.device)[:, :, 0, :].float().cpu()


def cached_signals(scored, names: list[str], uids: np.ndarray) -> list[CachedSignal]:
    """Every teacher of a ScoreResult, read from the cache in the order given."""
    return [CachedSignal(scored.store.entry("teacher", report.key), name, uids)
            for name, report in zip(names, scored.teachers)]


def live_signal(cached: CachedSignal, scoring: ScoreSpec, root: Path, rows, student_tokenizer,
                student_ids: list[list[int]], device: str) -> LiveSignal:
    """The teacher of ``cached`` loaded to run live; refused unless it splits text as the student does
    (token-level alignment pairs tokens; a cached [CLS] state is one vector per row)."""
    from ..models import load_classifier, load_tokenizer, resolve
    from ..scoring.tokens import tokenize

    ref = resolve(cached.name, root, scoring.trust_remote_code)
    tokenizer, _ = load_tokenizer(ref)
    texts = list(rows.dataset["text"])
    if not all(student_tokenizer.tokenize(t) == tokenizer.tokenize(t) for t in texts[:200]):
        raise SelectKDError(f"student {scoring.student} and teacher {cached.name} split text differently; token-level "
                            f"alignment needs the same segmentation (cached [CLS] alignment does not: drop --live-teacher)")
    pairs = list(rows.dataset["text_pair"]) if "text_pair" in rows.dataset.column_names else None
    ids = tokenize(tokenizer, texts, pairs, scoring.max_length)
    bad = [i for i in range(len(ids)) if len(ids[i]) != len(student_ids[i])]
    if bad:
        raise SelectKDError(f"student and teacher give different token counts for row {bad[0]}; token-level "
                            f"alignment needs the same segmentation")
    model, _ = load_classifier(ref, rows.num_labels, scoring.allow_untrained_head)
    model.to(device).eval()
    return LiveSignal(model, tokenizer.pad_token_id, ids, device, cached)


class Alignment:
    """Hidden-state alignment of the student to ``signal``: student states 0..L_s against the teacher's
    mapped layers, through a learned projection when the widths differ."""

    def __init__(self, signal: TeacherSignal, student_config, device: str):
        import torch

        self.signal, self.device = signal, device
        self.student_layers = student_config.num_hidden_layers
        self.layers = layer_map(self.student_layers, signal.num_layers)
        self.proj = None
        if student_config.hidden_size != signal.hidden_size:
            self.proj = torch.nn.Linear(student_config.hidden_size, signal.hidden_size).to(device)

    def pair(self, hidden_states, mask, rows: np.ndarray):
        """(student states, teacher states, token mask or None) for a batch."""
        import torch

        s = torch.stack([hidden_states[i] for i in range(self.student_layers + 1)], dim=1)  # (B, L+1, T, H)
        if self.proj is not None:
            s = self.proj(s.float())
        t = self.signal.alignment_targets(rows, self.layers, self.device)
        if self.signal.token_level:
            return s, t, mask
        return s[:, :, 0, :], t, None
