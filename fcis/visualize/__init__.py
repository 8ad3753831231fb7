"""Drawing predictions on images."""

from .overlay import draw_predictions, instance_colors

__all__ = ["draw_predictions", "instance_colors"]
