"""Training the Mask R-CNN of :mod:`.maskrcnn` on co-cultures: reading a folder of
images with one instance mask per cell type (:func:`read_folder`), the detector's
targets, and :func:`train_maskrcnn` (random patches, a generator of steps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .images import read_array, read_image
from .maskrcnn import InstanceModel, MaskRCNNConfig, build_model
from .model_input import to_model_input

# ---------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class CoSample:
    """One image of a co-culture and one instance label image per cell type."""

    name: str
    image: np.ndarray  # the plane as read, any dtype
    labels: np.ndarray  # (T, H, W) integer, 0 = background, one plane per type
    types: tuple[str, ...]

    def target(self, min_pixels: int = 1) -> dict[str, np.ndarray]:
        """Mask R-CNN's target: see :func:`instance_targets`."""
        return instance_targets(self.labels, min_pixels=min_pixels)


def instance_targets(type_labels, *, min_pixels: int = 1) -> dict[str, np.ndarray]:
    """``boxes`` (N, 4) float32 ``x0, y0, x1, y1`` (x1, y1 exclusive), ``labels`` (N,) int64
    = type index + 1, ``masks`` (N, H, W) uint8, from one instance label image per type;
    ids absent from their image, or with fewer than ``min_pixels`` pixels, are skipped."""
    boxes, kinds, masks = [], [], []
    planes = [np.asarray(p) for p in type_labels]
    shape = planes[0].shape if planes else (0, 0)
    for t, lab in enumerate(planes):
        for i, sl in enumerate(ndi.find_objects(lab), 1):
            if sl is None:
                continue
            m = lab[sl] == i
            if m.sum() < max(1, min_pixels):
                continue
            full = np.zeros(shape, np.uint8)
            full[sl][m] = 1
            boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
            kinds.append(t + 1)
            masks.append(full)
    return {
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "labels": np.array(kinds, np.int64),
        "masks": np.array(masks, np.uint8).reshape(-1, *shape),
    }


def read_folder(folder, types: Sequence[str] | None = None) -> list[CoSample]:
    """Read a :func:`synth.coculture.write_dataset` split: ``<id>_image.*`` and one instance
    mask ``<id>_<type>.tif`` per type (a binary mask is split into its components).
    ``types`` default to those of ``manifest.json`` in ``folder`` or its parent."""
    folder = Path(folder)
    if types is None:
        for m in (folder / "manifest.json", folder.parent / "manifest.json"):
            if m.is_file():
                types = json.loads(m.read_text())["types"]
                break
        else:
            raise ValueError(f"{folder}: no manifest.json here or above; give types=[...]")
    out = []
    for path in sorted(folder.glob("*_image.*")):
        stem, image = path.name.rsplit("_image.", 1)[0], read_image(path)
        planes = []
        for t in types:
            p = folder / f"{stem}_{t}.tif"
            if not p.is_file():
                msg = "every image needs one instance mask per type (an empty one if none)"
                raise ValueError(f"{folder}: {stem} has no {p.name}; {msg}")
            lab = read_array(p)
            if lab.shape != image.shape[:2]:
                raise ValueError(f"{p.name}: shape {lab.shape}, its image {image.shape[:2]}")
            planes.append(ndi.label(lab > 0)[0] if lab.max() <= 1 else lab)
        out.append(CoSample(stem, image, np.stack(planes), tuple(types)))
    if not out:
        raise ValueError(f"{folder}: no <id>_image.* files; point at a train/ or test/ folder")
    return out


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainStep:
    """Reported after every optimiser step."""

    step: int
    steps: int
    loss: float
    losses: dict[str, float]
    lr: float
    seconds: float


def _patch(x, labels, size, rng):
    """A random ``size``² window (the whole image if smaller), flipped and turned by 90°s."""
    h, w = x.shape
    y0, x0 = int(rng.integers(max(h - size, 0) + 1)), int(rng.integers(max(w - size, 0) + 1))
    x, labels = x[y0 : y0 + size, x0 : x0 + size], labels[:, y0 : y0 + size, x0 : x0 + size]
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    if flip:
        x, labels = x[:, ::-1], labels[:, :, ::-1]
    return np.rot90(x, k).copy(), np.rot90(labels, k, axes=(1, 2)).copy()


def train_maskrcnn(
    samples: Sequence[CoSample], *, model: InstanceModel | str = "resnet18", steps: int = 20000,
    max_seconds: float | None = None, lr: float = 0.01, momentum: float = 0.9,
    weight_decay: float = 1e-4, warmup: float = 0.05, batch_size: int = 2, patch_size: int = 512,
    seed: int = 0, threads: int | None = None, clip: float = 10.0, rois_per_image: int = 512,
) -> Generator[TrainStep, None, InstanceModel]:  # fmt: skip
    """Train Mask R-CNN on co-cultures: a generator yielding a :class:`TrainStep` after
    every step and returning the model (``tiling.run_to_end`` runs it to the end).

    SGD with momentum (Khalid et al.: base lr 0.02, momentum 0.9, on 16-image batches;
    the default 0.01 suits batches of 2), linear warm-up over ``warmup`` of the run, then
    a cosine to 1 % (:func:`training.losses.lr_factor`); the run's progress is the larger
    of the step and the time fractions. Every image of a batch is a random ``patch_size``²
    window, randomly flipped and turned by 90°. Gradients are clipped to norm ``clip``.
    ``rois_per_image``: proposals sampled per image for the box and mask heads (512 as in
    torchvision and Detectron2; a fixed cost per image, most of a step's on small patches).

    ``model``: a backbone name (a new model, weights seeded by ``seed``) or a model to
    go on training in place, so that a caller who closes the generator early (the
    step in progress ends first) still holds the model. ``threads``: torch CPU threads
    while it runs (None: unchanged), restored at the end, on close, on error.
    """
    import torch

    from .training.losses import lr_factor

    if not samples:
        raise ValueError("no training samples; read some with read_folder()")
    types = samples[0].types
    if any(s.types != types for s in samples):
        raise ValueError("samples of different type lists; read them with one types=[...]")
    old_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        if isinstance(model, str):
            torch.manual_seed(seed)
            model = build_model(MaskRCNNConfig(types=types, backbone=model))
        elif model.config.types != types:
            raise ValueError(f"the model knows types {model.config.types}, the data {types}")
        net, rng = model.net, np.random.default_rng(seed)
        net.roi_heads.fg_bg_sampler.batch_size_per_image = rois_per_image
        images = [to_model_input(s.image, model.config.input)[0] for s in samples]
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        t0, step = time.perf_counter(), 0
        net.train()
        while step < steps:
            xs, targets = [], []
            for j in rng.integers(len(samples), size=batch_size):
                x, lab = _patch(images[j], samples[j].labels, patch_size, rng)
                tg = instance_targets(lab, min_pixels=model.config.min_pixels)
                xs.append(torch.from_numpy(x)[None])
                targets.append({k: torch.from_numpy(v) for k, v in tg.items()})
            elapsed = time.perf_counter() - t0
            progress = max(step / steps, elapsed / max_seconds if max_seconds else 0.0)
            rate = lr * lr_factor(min(progress, 1.0), "onecycle", warmup)
            for g in opt.param_groups:
                g["lr"] = rate
            losses = net(xs, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at step {step + 1}; "
                                         "lower lr or raise warmup")  # fmt: skip
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            step += 1
            elapsed = time.perf_counter() - t0
            parts = {k: round(float(v.detach()), 5) for k, v in losses.items()}
            model.info = {"steps": step, "seconds": round(elapsed, 1), "images": len(samples),
                          "lr": lr, "batch_size": batch_size, "patch_size": patch_size,
                          "rois_per_image": rois_per_image, "seed": seed}  # fmt: skip
            yield TrainStep(step, steps, float(loss.detach()), parts, rate, elapsed)
            if max_seconds is not None and elapsed >= max_seconds:
                break
        net.eval()
        return model
    finally:
        torch.set_num_threads(old_threads)
