"""Which process of a distributed launch (``torchrun``, ``accelerate launch``) this is.

Every process trains (the HF ``Trainer`` runs data-parallel); only the main one evaluates, writes
``results.json`` and opens a W&B run, so a job has one record however many processes it used.
"""

from __future__ import annotations

import os


def rank() -> int:
    """This process's global rank: torch.distributed's once initialised, else the launcher's
    environment (``RANK``, then ``LOCAL_RANK``), else 0 for a plain ``python run.py``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    return rank() == 0
