"""Representations: the contract (``base``) and one module per kind."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from radistill.fields.base import KINDS, NEURAL_KINDS, FieldOutputs, RenderOutputs, Representation, config_from_dict, kind_class

__all__ = ["KINDS", "NEURAL_KINDS", "FieldOutputs", "RenderOutputs", "Representation", "create_field", "kind_class"]


def create_field(kind: str, aabb: Tensor, config: Any = None, **overrides: Any) -> Representation:
    """A freshly initialised field of ``kind`` over ``aabb`` [2, 3].

    Example:
        >>> field = create_field("hashgrid", torch.tensor([[-1.5] * 3, [1.5] * 3]), log2_table=17)
    """
    cls = kind_class(kind)
    if config is None:
        config = config_from_dict(cls.Config, overrides, source=f"{kind} options")
    elif overrides:
        config = config_from_dict(cls.Config, {**vars(config), **overrides}, source=f"{kind} options")
    return cls(config, aabb)
