"""Cell-type-aware instance segmentation with Mask R-CNN (DeepMuCS-Segmentation).

Khalid et al. (DeepMuCS) detect, segment and classify the cells of a co-culture with
ResNeSt-200 (deformable convolutions) + FPN and a Cascade Mask R-CNN head, anchors of
8, 16, 32, 64, 128 px and aspect ratios 0.5, 1, 2, 3, 4. torchvision has neither
ResNeSt, deformable backbones nor a cascade head, so this is torchvision's Mask R-CNN
(one box stage, the mask head on its boxes) on a ResNet + FPN, trained from scratch
(nothing is downloaded; BatchNorm, not frozen statistics, and every layer trainable)::

    plane (H×W) ─► gray, percentiles 1-99.8 → 0-1 (model_input.to_model_input, one channel)
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

Reading co-culture data and training are in :mod:`.maskrcnn_training`, the COCO
evaluation in :mod:`.maskrcnn_coco`; this module builds, saves, loads and predicts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .images import as_plane
from .model_input import InputSpec, Normalisation, to_model_input

BACKBONES = ("resnet18", "resnet50")
ANCHOR_SIZES = (8, 16, 32, 64, 128)  # Khalid et al., section V: one per FPN level P2-P6
ASPECT_RATIOS = (0.5, 1.0, 2.0, 3.0, 4.0)  # height / width, at every level


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


# ---------------------------------------------------------------- saving


def save_maskrcnn(model: InstanceModel, folder) -> Path:
    """``folder/config.json`` (config and training record) + ``folder/weights.safetensors``."""
    from safetensors.torch import save_file

    from .atomic import write_atomic

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
