"""A peer beside ``phase-cells``: DeepSea (Zargari et al. 2023) on the same phase-contrast images.

    pip install --no-deps --target /tmp/peers/deepsea deepsea==0.0.3   # MIT; weights in the wheel
    python benchmarks/peers.py --data ../shared/data/phase_usiigaci --deepsea /tmp/peers/deepsea
        [--model phase-cells] [--split test] [--threads 2]

DeepSea is a small phase-contrast cell segmentation U-Net whose trained weights ship
in its wheel, so it runs offline (cellpose and StarDist download theirs at run time).
It is installed beside the project, never into it (``--no-deps --target``), and only
its network class (``deepsea/model.py``, which imports torch alone) is loaded. Each
image goes through the steps of the package's own ``apply_img_segmentation``: scaled to
0-255, resized to 383×512 (bilinear, PIL), normalised to mean 0.5 / std 0.5, the mask
as the argmax of its two-class output, objects as connected components of at least 20
px; the objects are then resized back to the image (nearest). Its weights are read with
``torch.load(weights_only=True)``: tensors only, no code.

The project's model is scored by ``cultureseg evaluate``'s own function, as it runs by
default (object size estimated, its own test-time augmentation), and DeepSea's objects
with the same metric functions (pooled Dice, object F1 at IoU 0.5, SA(0.5), mSA), on the
model's test images (its card's ``test_ids``). Results go to ``benchmarks/results/peers.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def deepsea_objects(net, image, torch):
    """DeepSea's objects for one image, as its ``apply_img_segmentation`` makes them."""
    import numpy as np
    import torchvision.transforms as T
    from scipy import ndimage as ndi
    from skimage.morphology import remove_small_objects
    from skimage.transform import resize

    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    img = (255 * ((img - img.min()) / np.ptp(img))).astype(np.uint8)
    tf = T.Compose([T.ToPILImage(), T.Resize([383, 512]), T.ToTensor(), T.Normalize([0.5], [0.5])])
    x = tf(img).to(dtype=torch.float32).unsqueeze(0)
    with torch.inference_mode():
        mask, _edges = net(x)
    mask = mask.argmax(dim=1)[0].numpy() > 0
    small, _ = ndi.label(remove_small_objects(mask, min_size=20, connectivity=1))
    return resize(small, img.shape, order=0, preserve_range=True, anti_aliasing=False).astype(
        np.int32
    )


def scores(preds, trues) -> dict:
    """Dice, object F1, SA(0.5) and mSA as ``cultureseg evaluate`` computes them."""
    import numpy as np

    from napari_cultureseg.core import metrics as M
    from napari_cultureseg.core import object_metrics as OM

    pred = np.concatenate([(p > 0).ravel() for p in preds])
    ref = np.concatenate([(t > 0).ravel() for t in trues])
    return {
        "dice": round(M.dice(pred, ref), 4),
        "object_f1": round(OM.pooled_object_prf(preds, trues, 0.5)["object_f1"], 4),
        "sa_0.5": round(OM.segmentation_accuracy(preds, trues, 0.5), 4),
        "msa": round(OM.mean_segmentation_accuracy(preds, trues), 4),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--deepsea", required=True, help="the folder deepsea was installed into")
    ap.add_argument("--model", default="phase-cells")
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peers.json"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from _results import bundle_of, merge_result

    from napari_cultureseg.core.evaluate import _as_labels, evaluate, truth_from_folder

    package = Path(args.deepsea) / "deepsea"
    if not (package / "model.py").is_file():
        sys.exit(f"{args.deepsea}: no deepsea/model.py; install it with pip --no-deps --target")
    sys.path.insert(0, str(package))  # its model.py alone: the package's __init__ is not run
    from model import DeepSeaSegmentation

    net = DeepSeaSegmentation(n_channels=1, n_classes=2, bilinear=True)
    state = torch.load(
        package / "trained_models" / "segmentation.pth", map_location="cpu", weights_only=True
    )
    net.load_state_dict(state)
    net.eval()

    bundle = bundle_of(args.model)
    cfg = bundle.config
    ids = set(cfg.card.get("test_ids" if args.split == "test" else "validation_ids") or [])
    name = next(c.name for c in cfg.classes if c.instances)
    truths = truth_from_folder(args.data, [name], only=ids)
    trues = [_as_labels(t.masks[name]) for t in truths]
    t0 = time.perf_counter()
    ours = evaluate(bundle, truths, device="cpu")["classes"][name]  # as cultureseg evaluate
    sec = {"ours": time.perf_counter() - t0}
    t0, peer = time.perf_counter(), []
    for t, true in zip(truths, trues, strict=True):
        peer.append(deepsea_objects(net, t.image, torch))
        counts = [len(np.unique(x)) - 1 for x in (peer[-1], true)]
        print(t.name, "objects: DeepSea, reference", *counts, flush=True)
    sec["deepsea"] = time.perf_counter() - t0
    rows = {
        f"{args.model} (tta {cfg.tta}, object size auto)": {
            k: round(ours[k], 4) for k in ("dice", "object_f1", "sa_0.5", "msa")
        },
        "DeepSea 0.0.3 (its own steps)": scores(peer, trues),
    }
    for (k, v), s in zip(rows.items(), sec.values(), strict=True):
        v["seconds_per_image"] = round(s / len(truths), 2)
        print(k, v)
    merge_result(
        args.out,
        f"{args.model} {args.split}",
        {"images": sorted(t.name for t in truths), "threads": args.threads, "rows": rows},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
