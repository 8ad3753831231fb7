"""How long the ``auto`` recipe trains when ``--iterations`` is not given: a length from the data.

The rule counts epochs of the standard COCO schedules over the training set, where an image
denser than COCO's average counts as several COCO images:

    data size  = max(images, instances / 7.3)                  # COCO train2017: 860k instances / 118k images
    iterations = max(minimum, ceil(epochs x data size / images per step))

- ``epochs`` from random weights: 73, COCO's "6x" schedule (540k iterations of 16 images over
  118k images), the length at which Mask R-CNN trained from scratch caught up with ImageNet
  pre-training (He, Girshick and Dollár, "Rethinking ImageNet Pre-training", ICCV 2019; the
  schedule of mmdetection's and detectron2's ``scratch`` configs). From ImageNet weights: 12, COCO's
  "1x" schedule (90k iterations of 16 images).
- ``instances / 7.3``: a photo with 33 small objects teaches (and asks) more than one with a
  single pedestrian; counting it as 33 / 7.3 = 4.5 COCO images gives dense data a longer run
  in proportion to the objects to learn, and sparse data (fewer than 7.3 objects per image)
  keeps the plain count of images.
- ``minimum``: from random weights 2000 optimizer steps (measured on synthetic shapes,
  benchmarks/DEFAULTS.md: mask AP 29 after 300 steps and 62 after 1000, still rising fast, so a
  network from scratch needs a few thousand steps whatever the data); from ImageNet weights 300,
  the length of detectron2's fine-tuning tutorial on 61 balloon images at 2 per step.

So at 2 images per step from random weights: 61 balloon images (255 instances) 2227 iterations,
PennFudanPed's 130 training images (320 instances) 4745, 66 photos of 33 objects each 10 935,
COCO (118k images) 4.3 million, the 6x schedule itself; 10 images 2000 (the minimum). The rule was not tuned on a learning curve here (the CPU
budget did not allow one): it states where its numbers come from so that a measured curve can
replace them.
"""

from __future__ import annotations

import math

__all__ = ["COCO_INSTANCES_PER_IMAGE", "EPOCHS", "MIN_ITERATIONS", "iterations_for_data"]

#: COCO train2017: 860,001 instance annotations on 118,287 images.
COCO_INSTANCES_PER_IMAGE = 860_001 / 118_287
_COCO_IMAGES = 118_287
#: Epochs over the data: COCO's 6x schedule (from scratch) and 1x schedule (from ImageNet weights),
#: 90k iterations of 16 images per "1x".
EPOCHS = {"scratch": round(6 * 90_000 * 16 / _COCO_IMAGES), "pretrained": round(90_000 * 16 / _COCO_IMAGES)}
#: The fewest iterations the rule gives.
MIN_ITERATIONS = {"scratch": 2000, "pretrained": 300}


def iterations_for_data(num_images: int, num_instances: int, images_per_step: int, pretrained: bool
                        ) -> tuple[int, str]:
    """``(iterations, reason)`` of the rule in the module docstring, ``reason`` a sentence for the log."""
    if num_images < 1 or images_per_step < 1:
        raise ValueError(f"need at least one image and one image per step, got {num_images}, {images_per_step}")
    start = "pretrained" if pretrained else "scratch"
    epochs, minimum = EPOCHS[start], MIN_ITERATIONS[start]
    dense = num_instances / COCO_INSTANCES_PER_IMAGE
    size = max(float(num_images), dense)
    raw = math.ceil(epochs * size / images_per_step)
    iterations = max(minimum, raw)
    per_image = num_instances / num_images
    counted = (f"{size:.0f} images of COCO's density ({num_instances} / 7.3)" if dense > num_images
               else f"{num_images} images")
    why = ("COCO's 6x schedule, at which training from scratch matched ImageNet pre-training"
           if start == "scratch" else "COCO's 1x schedule of fine-tuning")
    reason = (f"{num_images} images with {num_instances} instances ({per_image:.1f} per image): {epochs} epochs "
              f"({why}) of {counted} at {images_per_step} per step = {raw}")
    if raw < minimum:
        reason += f", raised to the minimum of {minimum}" + (" for a network from scratch" if start == "scratch"
                                                              else "")
    return iterations, reason
