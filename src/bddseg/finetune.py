"""Start a run from a segmentation checkpoint (``bddseg train --init-from CKPT``).

bddseg's own checkpoints (they carry their classes) or a plain smp state dict: every tensor
of the network loads in full; the head's rows (the last conv of ``segmentation_head``, and of
the auxiliary head when both have one) are matched by class name, so a 19-class BDD100K model
starts a 4-class run with the rows of the classes they share and fresh rows for the others.
Fine-tuning, not resuming: ``--resume`` continues the same run from its ``last.pt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bddseg.checkpoints import CHECKPOINT_FORMAT, checkpoint_output_names
from bddseg.config import ModelConfig
from bddseg.errors import BddsegError
from bddseg.model import _inner, _read_weights, _state_dict_of


@dataclass(frozen=True)
class InitReport:
    """What :func:`init_from` did. ``loaded``: tensors loaded in full (everything outside the
    class rows). ``copied`` / ``new``: the run's classes whose rows of the head(s) came from
    the source / kept their fresh initialisation. ``by_position``: the source named no classes
    (a plain state dict) and its rows were copied in order. ``skipped``: source tensors this
    run has no place for (an auxiliary head it does not train); ``fresh``: tensors of this
    run the source lacks (an auxiliary head it did not train). ``warnings``: lines to print
    as warnings (no class matched)."""

    source: str
    kind: str  # "bddseg checkpoint" or "state dict"
    loaded: int
    copied: tuple[str, ...]
    new: tuple[str, ...]
    by_position: bool = False
    skipped: tuple[str, ...] = ()
    fresh: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """The summary, one line (two with tensors left fresh), e.g. ``init from X: 182
        tensors loaded in full, head: 2 of 4 classes copied (road, person), 2 new
        (background, vehicle); 0 skipped``."""
        k = len(self.copied) + len(self.new)
        how = " by position" if self.by_position else ""
        head = f"{len(self.copied)} of {k} classes copied{how}"
        if self.copied:
            head += f" ({_listing(self.copied)})"
        if self.new:
            head += f", {len(self.new)} new ({_listing(self.new)})"
        skipped = f"{len(self.skipped)} skipped"
        if self.skipped:
            skipped += " (its auxiliary head: this run has none)"
        out = [f"init from {self.source}: {self.loaded} tensors loaded in full, head: {head}; "]
        out[0] += skipped
        if self.fresh:
            out.append(
                f"the auxiliary head is not in the file: its {len(self.fresh)} tensors start fresh"
            )
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _listing(names: tuple[str, ...], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown}, ... ({len(names)} in all)"


def init_from(
    model: nn.Module, source: str | Path, names: Sequence[str], *, arch: str | None = None
) -> InitReport:
    """Initialise ``model`` (freshly built for a run) from a segmentation checkpoint, matching
    the classes by name: the start of fine-tuning on another class set (19 BDD100K classes ->
    Cityscapes, or a user's 4).

    Every tensor outside the head loads in full. The head is the last convolution of
    ``segmentation_head`` (every smp architecture) and of ``aux_head`` (:class:`AuxHead`):
    their tensors have one row per class. Row ``i`` (``weight[i]``, ``bias[i]``) takes the
    source's row of the class named ``names[i]`` (exact names: ``unknown`` matches only
    ``unknown``); a class the source lacks keeps its fresh row. An auxiliary head on one side
    only is skipped or left fresh (it only shapes training).

    Args:
        model: the run's model (:func:`build_model`; wrapped or not); changed in place.
        source: a bddseg checkpoint (its classes: its ``classes`` record, or the 19 BDD100K
            classes, + ``unknown`` for 20 outputs), or a plain state-dict file (``torch.save``
            of ``model.state_dict()``, or under ``"state_dict"``; or ``.safetensors``), whose
            rows are copied by position when it has ``len(names)`` of them, else the head
            starts fresh. ``torch.compile`` / DDP prefixes are dropped.
        names: the run's output channels, in order (``Classes.model_names(unknown)``).
        arch: the run's ``"arch/encoder"``, named when a bddseg checkpoint is of another.

    Returns:
        An :class:`InitReport`; printing it is the caller's job.

    Raises:
        BddsegError: one line naming the file: missing or unreadable, or weights that do not
            fit outside the head (the first few keys; ``checkpoint is X, this run is Y`` when
            a bddseg checkpoint is of another architecture or encoder).
    """
    p, names = Path(source), tuple(names)
    inner = _inner(model)
    own = inner.state_dict()
    heads = _head_keys(inner)
    obj = _read_weights(p, "checkpoint")
    bddseg = isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT
    state = _state_dict_of(obj, p, "a checkpoint or state dict")
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    theirs = _checkpoint_arch(obj) if bddseg else None
    skipped, fresh, n_source = _check_fit(own, state, heads, p, theirs, arch)

    source_names = checkpoint_output_names(obj, p) if bddseg else None
    if source_names is not None and len(source_names) != n_source:
        raise BddsegError(
            f"damaged bddseg checkpoint: {n_source} head rows for {len(source_names)} outputs", p
        )
    if source_names is None:  # a plain state dict: its rows have no names
        by_position = n_source == len(names)
        pick = list(range(len(names))) if by_position else [None] * len(names)
    else:
        by_position = False
        where = {n: j for j, n in enumerate(source_names)}
        pick = [where.get(n) for n in names]

    new_state = {k: v for k, v in state.items() if k in own and k not in heads}
    for k in heads:
        if k in state:
            t = own[k].clone()  # the fresh rows, for the classes the source lacks
            for i, j in enumerate(pick):
                if j is not None:
                    t[i] = state[k][j]
            new_state[k] = t
    for k in fresh:
        new_state[k] = own[k]
    inner.load_state_dict(new_state, strict=True)

    copied = tuple(n for n, j in zip(names, pick, strict=True) if j is not None)
    new = tuple(n for n, j in zip(names, pick, strict=True) if j is None)
    warnings_: list[str] = []
    if not copied:
        why = (
            f"none of its classes ({_listing(source_names, 5)}) is one of this run's"
            if source_names is not None
            else f"its head has {n_source} rows, this run {len(names)}, and no class names"
        )
        warnings_.append(f"init from {p}: {why}; the head starts fresh, the rest is loaded")
    return InitReport(
        source=str(p),
        kind="bddseg checkpoint" if bddseg else "state dict",
        loaded=sum(1 for k in own if k not in heads and k not in fresh),
        copied=copied,
        new=new,
        by_position=by_position,
        skipped=skipped,
        fresh=fresh,
        warnings=tuple(warnings_),
    )


def _head_keys(model: nn.Module) -> tuple[str, ...]:
    """The state-dict keys of the last convolution of ``segmentation_head`` and ``aux_head``:
    the tensors with one row per class."""
    keys: list[str] = []
    for head in ("segmentation_head", "aux_head"):
        module = getattr(model, head, None)
        if module is None:
            continue
        convs = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]
        if convs:
            name, conv = convs[-1]
            prefix = f"{head}.{name}." if name else f"{head}."
            keys += [prefix + k for k in conv.state_dict()]
    return tuple(keys)


def _check_fit(
    own: dict, state: dict, heads: tuple[str, ...], p: Path, theirs: str | None, arch: str | None
) -> tuple[tuple[str, ...], tuple[str, ...], int | None]:
    """Refuse ``state`` unless every tensor of ``own`` outside the auxiliary head is in it with
    its shape (the head's: but for the row count), and nothing else is. Returns the source's
    auxiliary-head keys this model lacks (skipped), this model's the source lacks (left
    fresh), and the source's head rows."""

    def aux(k: str) -> bool:
        return k.startswith("aux_head.")

    skipped = tuple(k for k in state if k not in own and aux(k))
    fresh = tuple(k for k in own if k not in state and aux(k))
    missing = [k for k in own if k not in state and not aux(k)]
    extra = [k for k in state if k not in own and not aux(k)]
    rows = {k: state[k].shape[0] for k in heads if k in state and state[k].ndim}
    wrong = [
        f"{k} {_shape(state[k])} vs {_shape(v)}"
        for k, v in own.items()
        if k in state
        and (state[k].shape[1:] != v.shape[1:] if k in heads else state[k].shape != v.shape)
    ]
    if len(set(rows.values())) > 1:
        wrong.append(f"head rows {', '.join(f'{k} {n}' for k, n in rows.items())}")
    if missing or extra or wrong:
        if theirs and arch and theirs != arch:
            raise BddsegError(f"checkpoint is {theirs}, this run is {arch}", p)
        raise BddsegError(_misfit(missing, extra, wrong, theirs, arch), p)
    return skipped, fresh, next(iter(rows.values()), None)


def _checkpoint_arch(ckpt: dict) -> str | None:
    """A bddseg checkpoint's ``"arch/encoder"`` (its config's, or the defaults it omits)."""
    config = ckpt.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        return None
    defaults = ModelConfig()
    return f"{model.get('arch', defaults.arch)}/{model.get('encoder', defaults.encoder)}"


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _misfit(
    missing: list[str], extra: list[str], wrong: list[str], theirs: str | None, arch: str | None
) -> str:
    def first(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} tensors of this model not in the file ({first(missing)})")
    if extra:
        parts.append(f"{len(extra)} not in this model ({first(extra)})")
    if wrong:
        parts.append(f"{len(wrong)} of another shape ({first(wrong)})")
    model = f" {arch}" if arch else ""
    known = f" (the checkpoint is {theirs})" if theirs else ""
    return f"weights do not fit this{model} model{known}: {'; '.join(parts)}"


__all__ = ["InitReport", "init_from"]
