"""The tracked objects' state in a session, stacked along the batch dimension so objects share work."""
from __future__ import annotations

import torch
from torch import Tensor

from models.target_model import TargetModel


class ObjectStates:
    """Per object: id, target model, template, stored score and previous x, in the order objects started.

    templates (B,64,64); stored_score (B,1,h16,w16): the last full-path score (or the given mask at a start
    or a correction); prev_x (B,64,h16,w16): the last deep-part output.
    """

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.target_models: list[TargetModel] = []
        self.templates: Tensor | None = None
        self.stored_score: Tensor | None = None
        self.prev_x: Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, object_id: int) -> bool:
        return object_id in self.ids

    def position(self, object_id: int) -> int:
        return self.ids.index(object_id)

    def add(self, ids: list[int], models: list[TargetModel], templates: Tensor, scores: Tensor, x: Tensor) -> None:
        """Append objects that start."""
        self.ids += ids
        self.target_models += models
        cat = lambda old, new: new if old is None else torch.cat([old, new])  # noqa: E731
        self.templates = cat(self.templates, templates)
        self.stored_score = cat(self.stored_score, scores)
        self.prev_x = cat(self.prev_x, x)

    def replace(self, positions: list[int], templates: Tensor, scores: Tensor, x: Tensor) -> None:
        """Take the template, stored score and previous x of these objects from a frame (corrections)."""
        index = torch.tensor(positions, dtype=torch.long, device=self.templates.device)
        self.templates[index] = templates.to(self.templates.dtype)
        self.stored_score[index] = scores.to(self.stored_score.dtype)
        self.prev_x[index] = x.to(self.prev_x.dtype)

    def remove(self, object_id: int) -> None:
        """Forget one object."""
        k = self.position(object_id)
        del self.ids[k]
        del self.target_models[k]
        keep = [j for j in range(len(self.ids) + 1) if j != k]
        if not self.ids:
            self.templates = self.stored_score = self.prev_x = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.templates.device)
        self.templates = self.templates[index]
        self.stored_score = self.stored_score[index]
        self.prev_x = self.prev_x[index]
