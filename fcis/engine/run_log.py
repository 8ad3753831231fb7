"""What a training run writes besides checkpoints: ``log.jsonl`` (and TensorBoard events), and the
formatting of losses and metrics for the log and the progress bar (JSON files: :mod:`fcis.json_io`)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from ..json_io import jsonable

__all__ = ["RunLog", "segm_ap", "fmt_losses"]


def segm_ap(metrics: dict) -> float | None:
    ap = (metrics.get("segm") or {}).get("AP")
    if ap is None or not math.isfinite(ap):
        return None
    return float(ap)


def fmt_losses(losses: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in losses.items())


class RunLog:
    """``log.jsonl`` (and TensorBoard when available). A resumed run drops the lines written
    after its checkpoint, so the log reads as one uninterrupted run."""

    def __init__(self, output_dir: Path, start_iter: int) -> None:
        self.path = output_dir / "log.jsonl"
        kept = []
        if start_iter > 0 and self.path.exists():
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    if json.loads(line).get("iteration", 0) <= start_iter:
                        kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", buffering=1)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # noqa: BLE001 - tensorboard not installed
            SummaryWriter = None  # type: ignore[misc, assignment]
        if SummaryWriter is not None:
            self.tb = SummaryWriter(str(output_dir / "tb"), purge_step=start_iter or None)

    def write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(jsonable(record)) + "\n")
        if self.tb is not None:
            it = record["iteration"]
            for k, v in (record.get("losses") or {}).items():
                if isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(f"loss/{k}", v, it)
            if "lr" in record and not record.get("nonfinite"):
                self.tb.add_scalar("lr", record["lr"], it)
            for task, values in (record.get("metrics") or {}).items():
                if isinstance(values, dict):
                    for k, v in values.items():
                        if isinstance(v, (int, float)) and math.isfinite(v):
                            self.tb.add_scalar(f"{task}/{k}", v, it)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
