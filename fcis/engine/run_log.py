"""What a training run writes besides checkpoints: ``log.jsonl``, ``curves.png`` (see
:mod:`fcis.engine.curves`) and TensorBoard events (``tb/``, when the ``tensorboard`` package is
installed), and the formatting of losses and metrics for the log and the progress bar (JSON files:
:mod:`fcis.json_io`)."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from ..json_io import jsonable
from .curves import CurvePlotter

__all__ = ["RunLog", "segm_ap", "fmt_losses"]


def segm_ap(metrics: dict) -> float | None:
    ap = (metrics.get("segm") or {}).get("AP")
    if ap is None or not math.isfinite(ap):
        return None
    return float(ap)


def fmt_losses(losses: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in losses.items())


TENSORBOARD_HINT = "pip install tensorboard (or the fcis[tensorboard] extra)"


class RunLog:
    """``log.jsonl``, ``curves.png`` (:class:`fcis.engine.curves.CurvePlotter`) and TensorBoard
    events when ``torch.utils.tensorboard`` can be imported (``tb`` is then the writer, else
    None). A resumed run drops the lines written after its checkpoint, so the log reads as one
    uninterrupted run, and its curves and TensorBoard scalars continue from there.

    ``total_iterations`` (the x axis of the curves) and ``title`` are for the picture."""

    def __init__(self, output_dir: Path, start_iter: int, *, total_iterations: int | None = None,
                 title: str = "") -> None:
        self.output_dir = output_dir
        self.path = output_dir / "log.jsonl"
        kept, records = [], []
        if start_iter > 0 and self.path.exists():
            for line in self.path.read_text().splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    record = json.loads(line)
                    if record.get("iteration", 0) <= start_iter:
                        kept.append(line)
                        records.append(record)
        self.path.write_text("".join(line + "\n" for line in kept))
        self.file = open(self.path, "a", buffering=1)
        self.curves = CurvePlotter(output_dir / "curves.png", records, total_iterations=total_iterations, title=title)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # noqa: BLE001 - tensorboard not installed
            SummaryWriter = None  # type: ignore[misc, assignment]
        if SummaryWriter is not None:
            # a resumed run: TensorBoard hides the events of steps after the checkpoint's
            self.tb = SummaryWriter(str(output_dir / "tb"), purge_step=start_iter + 1 if start_iter else None)

    @property
    def curves_path(self) -> Path:
        return self.curves.path

    @property
    def tensorboard_dir(self) -> Path | None:
        """Where the TensorBoard events go (None without the ``tensorboard`` package)."""
        return self.output_dir / "tb" if self.tb is not None else None

    def where(self) -> str:
        """One line for the user: where the curves and the TensorBoard events are (or how to get
        the latter)."""
        tb = (f"TensorBoard: tensorboard --logdir {self.output_dir}" if self.tb is not None
              else f"TensorBoard events: not written ({TENSORBOARD_HINT})")
        return f"curves: {self.curves_path} (redrawn as training goes); {tb}"

    def write(self, record: dict[str, Any]) -> None:
        plain = jsonable(record)
        self.file.write(json.dumps(plain) + "\n")
        self.curves.add(plain)
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
        self.curves.close()
        if self.tb is not None:
            self.tb.close()
