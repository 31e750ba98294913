"""Cell-type-aware instance segmentation with Mask R-CNN (DeepMuCS-Segmentation).

Khalid et al. (DeepMuCS) detect, segment and classify the cells of a co-culture with
ResNeSt-200 (deformable convolutions) + FPN and a Cascade Mask R-CNN head, anchors of
8, 16, 32, 64, 128 px and aspect ratios 0.5, 1, 2, 3, 4. torchvision has neither
ResNeSt, deformable backbones nor a cascade head, so this is torchvision's Mask R-CNN
(one box stage, the mask head on its boxes) on a ResNet + FPN, trained from scratch
(nothing is downloaded; BatchNorm, not frozen statistics, and every layer trainable)::

    plane (H×W) ─► gray, percentiles 1-99.8 → 0-1 (images.to_model_input, one channel)
      ─► ResNet-18 or -50 (conv1 takes one channel) + FPN: P2-P6, strides 4-64
      ─► RPN: anchors 8/16/32/64/128 px, one size per level, h/w 0.5/1/2/3/4 (5 a place)
      ─► RoIAlign ─► box + type head (per-type NMS) and mask head (28² per detection)
      ─► one instance label image per type: each pixel to the best-scoring detection

The image is never resized (torchvision would bring it to 800-1333 px and change the
cells' size in pixels); it is segmented whole, up to ``MaskRCNNConfig.max_pixels``.

>>> data = read_folder("coculture/train")                      # doctest: +SKIP
>>> model = run_to_end(train_maskrcnn(data, max_seconds=600))  # doctest: +SKIP
>>> save_maskrcnn(model, "models/coculture-maskrcnn")          # doctest: +SKIP
>>> labels = predict_instances(model, image)    # doctest: +SKIP
>>> labels["GMP"]                               # (H, W) instance labels of one type

(``run_to_end`` is :func:`.tiling.run_to_end`.) The percentile normalisation is the only
one: the detector's own transform has mean 0 and standard deviation 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .images import InputSpec, Normalisation, as_plane, read_array, read_image, to_model_input

BACKBONES = ("resnet18", "resnet50")
ANCHOR_SIZES = (8, 16, 32, 64, 128)  # Khalid et al., section V: one per FPN level P2-P6
ASPECT_RATIOS = (0.5, 1.0, 2.0, 3.0, 4.0)  # height / width, at every level
LIVECELL_AREAS = {"small": (0, 18**2), "medium": (18**2, 31**2), "large": (31**2, 1e10)}
"""COCO area ranges as LIVECell (Edlund et al. 2021, ``code/coco_evaluation.py``) set them
for cells and DeepMuCS reports them, in px² of mask area."""
MAX_DETS = (100, 500, 2000)  # LIVECell's; AP is read at the last


@dataclass(frozen=True)
class MaskRCNNConfig:
    """What a saved model is (``config.json``); thresholds are prediction defaults."""

    types: tuple[str, ...]
    """Cell types in order: detection class k + 1 is ``types[k]`` (0 is background)."""
    backbone: str = "resnet18"
    anchor_sizes: tuple[int, ...] = ANCHOR_SIZES
    aspect_ratios: tuple[float, ...] = ASPECT_RATIOS
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    min_pixels: int = 8
    """A detection left with fewer pixels (after better ones took theirs) is dropped."""
    min_kept: float = 0.5
    """A detection keeping less than this share of its mask is another one's duplicate."""
    detections_per_image: int = 500
    percentiles: tuple[float, float] = (1.0, 99.8)
    max_pixels: int = 2048 * 2048
    """Images are segmented whole; larger ones are refused (crop them)."""

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r}: choose one of {', '.join(BACKBONES)}")
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"give 5 anchor sizes (FPN levels P2-P6), got {self.anchor_sizes}")
        if not self.types or len(set(self.types)) != len(self.types):
            raise ValueError(f"types must be distinct names, one or more, got {self.types}")

    @property
    def input(self) -> InputSpec:
        lo, hi = self.percentiles
        return InputSpec(channels=1, normalisation=Normalisation(low=lo, high=hi))

    @classmethod
    def from_dict(cls, d: dict) -> MaskRCNNConfig:
        known = set(cls.__dataclass_fields__)
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**d)


@dataclass(eq=False)
class InstanceModel:
    """A Mask R-CNN network with its config and a record of its training."""

    config: MaskRCNNConfig
    net: object  # torchvision.models.detection.MaskRCNN
    info: dict = field(default_factory=dict)


def build_model(config: MaskRCNNConfig) -> InstanceModel:
    """A new, randomly initialised model (seed torch first for reproducible weights)."""
    import torch
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.models.detection.rpn import RPNHead
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class KeepSize(GeneralizedRCNNTransform):
        """Normalise and batch, never resize: cells keep the size they have."""

        def resize(self, image, target=None):
            return image, target

    backbone = resnet_fpn_backbone(
        backbone_name=config.backbone,
        weights=None,
        norm_layer=torch.nn.BatchNorm2d,
        trainable_layers=5,
    )
    backbone.body.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    anchors = AnchorGenerator(
        sizes=tuple((int(s),) for s in config.anchor_sizes),
        aspect_ratios=(tuple(float(a) for a in config.aspect_ratios),) * len(config.anchor_sizes),
    )
    net = MaskRCNN(
        backbone,
        num_classes=len(config.types) + 1,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
        box_detections_per_img=config.detections_per_image,
    )
    # the percentile normalisation is the input's normalisation (mean 0, std 1: no other)
    net.transform = KeepSize(1, 1, image_mean=[0.0], image_std=[1.0])
    return InstanceModel(config, net)


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


# ---------------------------------------------------------------- saving


def save_maskrcnn(model: InstanceModel, folder) -> Path:
    """``folder/config.json`` (config and training record) + ``folder/weights.safetensors``."""
    from safetensors.torch import save_file

    from .batch import write_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.net.state_dict().items()}
    text = json.dumps({"kind": "maskrcnn", **asdict(model.config), "info": model.info}, indent=1)
    write_atomic(folder / "weights.safetensors", lambda tmp: save_file(state, str(tmp)))
    write_atomic(folder / "config.json", lambda tmp: tmp.write_text(text))
    return folder


def load_maskrcnn(folder) -> InstanceModel:
    """A model saved by :func:`save_maskrcnn` (no pickle is read), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg, weights = folder / "config.json", folder / "weights.safetensors"
    if not (cfg.is_file() and weights.is_file()):
        raise FileNotFoundError(f"{folder}: needs config.json and weights.safetensors "
                                "(a folder written by save_maskrcnn)")  # fmt: skip
    d = json.loads(cfg.read_text())
    if d.get("kind") != "maskrcnn":
        raise ValueError(f"{cfg}: not a Mask R-CNN model (kind {d.get('kind')!r})")
    model = build_model(MaskRCNNConfig.from_dict(d))
    model.net.load_state_dict(load_file(str(weights)))
    model.net.eval()
    model.info = d.get("info", {})
    return model


# ---------------------------------------------------------------- prediction


def _pasted(masks, boxes, shape, threshold):
    """Each 28² mask resized into its box as torchvision pastes it (``paste_masks_in_image``:
    expanded by one cell), thresholded; ``(y0, x0, bool window)``, never image-sized."""
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    masks, scale = expand_masks(masks, padding=1)
    boxes = expand_boxes(boxes, scale).to(dtype=torch.int64)
    (im_h, im_w), out = shape, []
    for m, b in zip(masks, boxes.tolist(), strict=True):
        w, h = max(b[2] - b[0] + 1, 1), max(b[3] - b[1] + 1, 1)
        m = F.interpolate(m[None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        x0, x1, y0, y1 = max(b[0], 0), min(b[2] + 1, im_w), max(b[1], 0), min(b[3] + 1, im_h)
        win = m[y0 - b[1] : y1 - b[1], x0 - b[0] : x1 - b[0]] >= threshold  # postprocess.above
        out.append((y0, x0, win.numpy()))
    return out


def assign_pixels(
    windows, kinds: Sequence[int], scores: Sequence[float], shape: tuple[int, int],
    types: Sequence[str], *, min_pixels: int = 8, min_kept: float = 0.5,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    """One instance label image per type from detections sorted best first.

    ``windows``: ``(y0, x0, bool mask window)`` per detection, ``kinds`` its type index.
    Each detection keeps the pixels of its mask no earlier one took, and is dropped if
    that leaves fewer than ``min_pixels`` or less than ``min_kept`` of its mask (a
    duplicate of a better one). Returns ``({type: labels 1..n}, {type: (n,) scores})``.
    """
    owner = np.zeros(shape, np.int32)  # which kept detection (1-based) took each pixel
    kept = []  # (type index, score) of the kept detections, best first
    for (y0, x0, win), kind, score in zip(windows, kinds, scores, strict=True):
        region = owner[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]]
        free = win & (region == 0)
        n = int(free.sum())
        if n < max(min_pixels, 1) or n < min_kept * win.sum():
            continue
        kept.append((int(kind), float(score)))
        region[free] = len(kept)
    labels, type_scores = {}, {}
    for ti, t in enumerate(types):
        mine = [j + 1 for j, (tj, _) in enumerate(kept) if tj == ti]
        lut = np.zeros(len(kept) + 1, np.uint16 if len(mine) < 65536 else np.uint32)
        lut[mine] = np.arange(1, len(mine) + 1)
        labels[t] = lut[owner]
        type_scores[t] = np.array([kept[j - 1][1] for j in mine], np.float32)
    return labels, type_scores


def predict_instances(
    model: InstanceModel, image, *, score_threshold: float | None = None,
    mask_threshold: float | None = None, with_scores: bool = False,
):  # fmt: skip
    """Segment and classify the cells of one image, whole (no tiles, no resizing).

    Detections above ``score_threshold`` are taken best first; each keeps the pixels of
    its mask (``> mask_threshold``) no better one took, and is dropped if that leaves
    fewer than ``config.min_pixels`` or less than ``config.min_kept`` of its mask, so the
    label images of all types together never overlap. Thresholds default to the
    model's config (0.5 and 0.5).

    Returns
    -------
    dict
        ``{type: (H, W) uint16/uint32 instance labels numbered 1..n}``; with
        ``with_scores`` also ``{type: (n,) float32 score of label i + 1}``.
    """
    import torch

    cfg, net = model.config, model.net
    plane = as_plane(image)
    h, w = plane.shape[:2]
    if h * w > cfg.max_pixels:
        raise ValueError(f"image of {h}x{w} px: segmented whole, up to {cfg.max_pixels} px; "
                         "crop it into fields and segment each")  # fmt: skip
    score_threshold = cfg.score_threshold if score_threshold is None else score_threshold
    mask_threshold = cfg.mask_threshold if mask_threshold is None else mask_threshold
    x = torch.from_numpy(to_model_input(plane, cfg.input))
    net.eval()
    kept_thresh, net.roi_heads.score_thresh = net.roi_heads.score_thresh, score_threshold
    try:
        with torch.inference_mode():
            images, _ = net.transform([x])
            features = net.backbone(images.tensors)
            proposals, _ = net.rpn(images, features)
            det = net.roi_heads(features, proposals, images.image_sizes)[0][0]
    finally:
        net.roi_heads.score_thresh = kept_thresh
    order = torch.argsort(det["scores"], descending=True, stable=True)
    windows = _pasted(det["masks"][order], det["boxes"][order], (h, w), mask_threshold)
    kinds = (det["labels"][order] - 1).tolist()
    labels, type_scores = assign_pixels(
        windows, kinds, det["scores"][order].tolist(), (h, w), cfg.types,
        min_pixels=cfg.min_pixels, min_kept=cfg.min_kept,
    )  # fmt: skip
    return (labels, type_scores) if with_scores else labels


# ---------------------------------------------------------------- COCO evaluation


def coco_annotations(
    labels: dict[str, np.ndarray], types: Sequence[str], *, image_id: int,
    scores: dict[str, np.ndarray] | None = None,
) -> list[dict]:  # fmt: skip
    """COCO annotations (``segmentation`` as compressed RLE, ``area``, ``bbox`` x, y, w, h,
    ``category_id`` = type index + 1) of every instance of ``{type: label image}``; with
    ``scores`` (``{type: score of label i + 1}``), results to evaluate."""
    from pycocotools import mask as mask_util

    out = []
    for t, lab in labels.items():
        lab = np.asarray(lab)
        for i, sl in enumerate(ndi.find_objects(lab), 1):
            if sl is None:
                continue
            m = np.asfortranarray(lab == i, dtype=np.uint8)
            (y0, y1), (x0, x1) = (sl[0].start, sl[0].stop), (sl[1].start, sl[1].stop)
            rle = mask_util.encode(m)
            rle["counts"] = rle["counts"].decode("ascii")
            ann = {
                "image_id": int(image_id),
                "category_id": list(types).index(t) + 1,
                "segmentation": rle,
                "area": int(m.sum()),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": 0,
            }
            if scores is not None:
                ann["score"] = float(scores[t][i - 1])
            out.append(ann)
    return out


def coco_evaluate(
    truth: list[dict], results: list[dict], *, types: Sequence[str],
    shapes: dict[int, tuple[int, int]], areas: dict = LIVECELL_AREAS,
) -> dict:  # fmt: skip
    """Segmentation mAP (IoU 0.50:0.95), mAP50, mAP75, mAPs/m/l (``areas``) over all types
    and per type, as COCOeval computes them, ``MAX_DETS[-1]`` detections an image; a cell
    found with the wrong type counts as missed and as a false detection. ``truth``,
    ``results``: :func:`coco_annotations` lists; ``shapes``: ``{image_id: (H, W)}``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cats = [{"id": k + 1, "name": t} for k, t in enumerate(types)]
    images = [{"id": i, "height": h, "width": w} for i, (h, w) in shapes.items()]
    gt = COCO()
    gt.dataset = {"images": images, "categories": cats,
                  "annotations": [{**a, "id": n + 1} for n, a in enumerate(truth)]}  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
        dt = gt.loadRes([{**a, "id": n + 1} for n, a in enumerate(results)]) if results else COCO()
        if not results:
            dt.dataset = {"images": images, "categories": cats, "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, "segm")
        ev.params.maxDets = list(MAX_DETS)
        ev.params.areaRng = [[0, 1e10]] + [list(map(float, areas[k])) for k in areas]
        ev.params.areaRngLbl = ["all", *areas]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"]  # (IoU, recall, category, area, maxDets)
    iou = list(np.round(ev.params.iouThrs, 2))

    def summary(k=slice(None)) -> dict:
        def ap(p):
            p = p[p > -1]
            return round(float(p.mean()), 4) if p.size else None

        row = {"mAP": ap(prec[:, :, k, 0, -1]), "mAP50": ap(prec[iou.index(0.5), :, k, 0, -1]),
               "mAP75": ap(prec[iou.index(0.75), :, k, 0, -1])}  # fmt: skip
        for a, name in enumerate(areas, 1):
            row[f"mAP{name[0]}"] = ap(prec[:, :, k, a, -1])
        return row

    return {"overall": summary(), "per_type": {t: summary(k) for k, t in enumerate(types)}}
