"""Which images the validation loop embeds: the validation dataloaders and their roles.

Lightning's validation loop runs ``SSLModule.validation_step`` over every loader that the
DataModule's ``val_dataloader()`` returns; the evaluation callbacks read the features from the
loop's outputs. The loaders come in one fixed order of roles, ``ROLES``; only the roles some
callback asks for are present, so ``dataloader_idx`` i of the loop is ``plan.roles[i]``:

    ===========  ===========  ============================================  ===================
    role         split        rows                                          read by
    ===========  ===========  ============================================  ===================
    ``val``      held-out     all                                           KNNProbe (queries),
                                                                            LinearProbe
    ``bank``     train        all, or KNNProbe's ``bank_size`` random rows  KNNProbe (bank)
    ``rankme``   train        RankMe's ``num_samples`` random rows          RankMe
    ``pairs``    held-out     Diagnostics' ``num_images`` random rows, in   Diagnostics
                 (else train) fixed chunks of ``batch_size`` images
    ===========  ===========  ============================================  ===================

``val`` and ``bank`` come from the DataModule's ``labelled_data()`` (the training data, or the
recipe's separate labelled ``eval_root``), ``rankme`` from the training data. ``rankme`` is left
out when the bank already holds RankMe's rows (the bank is the training data's whole train split,
or the same seeded draw); RankMe then takes its rows from the ``bank`` features, so no image is
embedded twice in one evaluation.

``pairs`` comes from the training data itself (its held-out split, or its train split when it has
none; ``ImageDataModule.pairs_split``). Its loader yields whole fixed chunks (``pairs_dataloader``),
so a chunk's augmented views are the same whichever process embeds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Role = Literal["val", "bank", "rankme", "pairs"]
ROLES: tuple[Role, ...] = ("val", "bank", "rankme", "pairs")
# ``pairs``: the held-out split when the data has one, else the train split (``pairs_split``).
ROLE_SPLIT: dict[Role, Literal["train", "val"]] = {"val": "val", "bank": "train", "rankme": "train", "pairs": "val"}


@dataclass(frozen=True)
class EvalPlan:
    """The validation loaders of one fit.

    Attributes:
        roles: the roles present, in ``ROLES`` order; ``dataloader_idx`` i is ``roles[i]``.
        rows: role -> (M,) sorted int64 positions in the role's split, or None for the whole split.
        sources: wanted role -> the role whose loader carries its images (``rankme`` -> ``bank``
            when the bank holds RankMe's rows; otherwise the role itself).
    """

    roles: tuple[Role, ...] = ()
    rows: Mapping[Role, Tensor | None] = field(default_factory=dict)
    sources: Mapping[Role, Role] = field(default_factory=dict)

    def role(self, dataloader_idx: int) -> Role:
        """The role of the validation loop's ``dataloader_idx``."""
        return self.roles[dataloader_idx]


def plan_evaluation(wanted: list[Mapping[Role, Tensor | None]], share_bank: bool = True) -> EvalPlan:
    """Merge what each evaluation callback wants into one plan.

    Args:
        wanted: per callback, role -> rows of the role's split it needs (None: the whole split).
            Callbacks wanting different rows of one role share one loader of the union of the rows
            (None wins); each keeps only its own rows (``FeatureStore`` ``rows``).
        share_bank: whether the bank is the training data's train split (not a separate labelled
            ``eval_root``), so RankMe may read its rows from it.

    Returns:
        The plan (see the module docstring for the order and the ``rankme`` -> ``bank`` sharing).
    """
    rows: dict[Role, Tensor | None] = {}
    for wants in wanted:
        for role, r in wants.items():
            if role not in ROLE_SPLIT:
                raise ValueError(f"role: unknown evaluation role {role!r} (known: {', '.join(ROLES)})")
            if role not in rows:
                rows[role] = r
            elif rows[role] is not None:
                rows[role] = None if r is None else torch.unique(torch.cat([rows[role], r]))  # sorted
    sources: dict[Role, Role] = {role: role for role in rows}
    if share_bank and "rankme" in rows and "bank" in rows and _covers(rows["bank"], rows["rankme"]):
        sources["rankme"] = "bank"
        del rows["rankme"]
    roles = tuple(role for role in ROLES if role in rows)
    return EvalPlan(roles=roles, rows=rows, sources=sources)


def _covers(bank: Tensor | None, rows: Tensor | None) -> bool:
    """Whether the bank's rows include ``rows`` (None = the whole split)."""
    if bank is None:
        return True
    return rows is not None and bool(torch.isin(rows, bank).all())
