"""The processes of one job: one, or W under ``torchrun`` / ``accelerate launch``.

Sampling and evaluation split their shards among them (shard s goes to the process of rank
s mod W); the main process alone writes what is shared, and an error on it reaches every other
process instead of leaving them waiting.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import DQOError

__all__ = ["Processes"]


@dataclass(frozen=True)
class Processes:
    """This process's place among the job's ``world`` processes (``rank`` 0 is the main one)
    and its ``device`` (None for a single process: the config's device is used)."""

    rank: int = 0
    world: int = 1
    device: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def current() -> Processes:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return Processes()
        from accelerate import PartialState  # starts the process group (gloo on CPUs)

        state = PartialState(cpu=not torch.cuda.is_available())
        return Processes(state.process_index, state.num_processes, state.device)

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def main_first(self, step: Callable[[], Any]) -> Any:
        """Run ``step`` on the main process; the others wait and raise its error, if any.
        Every process returns the main process's result (broadcast: it must pickle)."""
        error = result = None
        if self.main:
            try:
                result = step()
            except Exception as err:  # the others must not wait for ever
                if self.world == 1:
                    raise
                error = err if isinstance(err, DQOError) else RuntimeError(repr(err))
        if self.world > 1:
            box = [(error, result)]
            torch.distributed.broadcast_object_list(box, src=0)
            error, result = box[0]
        if error is not None:
            raise error
        return result
