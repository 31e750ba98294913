"""COCO evaluation of instance predictions (:mod:`.maskrcnn`) as LIVECell reports it:
AP and AR per cell type and object size (:data:`LIVECELL_AREAS`), up to
:data:`MAX_DETS` detections per image (pycocotools).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

LIVECELL_AREAS = {"small": (0, 18**2), "medium": (18**2, 31**2), "large": (31**2, 1e10)}
"""COCO area ranges as LIVECell (Edlund et al. 2021, ``code/coco_evaluation.py``) set them
for cells and DeepMuCS reports them, in px² of mask area."""
MAX_DETS = (100, 500, 2000)  # LIVECell's; AP is read at the last


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
