"""Synthetic histology and patch-dataset throughput, plus how hard the task is.

    python benchmarks/synthetic_throughput.py            # CPU, demo sizes (a minute or two)
    python benchmarks/synthetic_throughput.py --smoke    # tiny, seconds (CI / sanity)
    python benchmarks/synthetic_throughput.py --gpu      # on an accelerator, bigger batches

Prints one JSON line: generator patches/s per size (wall and per CPU-second, since shared CPUs
make wall time noisy), compile seconds, dataset write/read/loader throughput, and two baselines
trained on some pseudo-slides and tested on others: a global colour histogram (should stay far
below a CNN: the classes differ in nuclei, not in colour) and a nuclear-morphology feature
(large dark blobs: shows the nuclei carry the label).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def bench_generator(size: int, n: int, batch: int) -> dict:
    from ibo_jax.data import synthetic

    _, wall_c, cpu_c = _timed(lambda: synthetic.generate(np.arange(batch), seed=0, image_size=size,
                                                         batch_size=batch))
    _, wall, cpu = _timed(lambda: synthetic.generate(np.arange(batch, batch + n), seed=0,
                                                     image_size=size, batch_size=batch))
    return {"size": size, "n": n, "batch": batch, "patches_per_s": n / wall,
            "patches_per_cpu_s": n / max(cpu, 1e-9), "first_call_s": wall_c}


def histogram_features(images: np.ndarray, bins: int = 16) -> np.ndarray:
    return np.concatenate([np.stack([np.histogram(im[..., c], bins=bins, range=(0, 256))[0]
                                     for im in images]) for c in range(3)], 1) / images[0, ..., 0].size


def morphology_features(images: np.ndarray) -> np.ndarray:
    """Per patch: area shares of dark connected blobs in size bins (small = lymphocytes)."""
    from scipy import ndimage

    s = images.shape[1] / 64.0
    edges = np.array([0, 8, 16, 24, 36, 60, 1e9]) * s * s
    out = []
    for im in images:
        gray = im.astype(np.float32).mean(-1)
        dark = gray < np.percentile(gray, 35)
        lab, n = ndimage.label(dark)
        areas = np.bincount(lab.ravel())[1:]
        out.append(np.histogram(areas, bins=edges, weights=areas)[0] / gray.size)
    return np.asarray(out)


def baselines(n: int, size: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ibo_jax.data import synthetic

    d = synthetic.generate(np.arange(n), seed=1, image_size=size)
    train = d["slide"] < 14  # 14 of 20 pseudo-slides train, the others test
    res = {}
    for name, feats in (("colour_histogram", histogram_features(d["image"])),
                        ("nuclear_morphology", morphology_features(d["image"]))):
        x = StandardScaler().fit(feats[train]).transform(feats)
        clf = LogisticRegression(max_iter=3000).fit(x[train], d["label"][train])
        res[f"{name}_test_acc"] = float(clf.score(x[~train], d["label"][~train]))
    res["baseline_n"] = n
    return res


def bench_dataset(n: int, size: int) -> dict:
    from ibo_jax.data import patches

    with tempfile.TemporaryDirectory() as tmp:
        src = patches.SyntheticSource(n_patches=n, image_size=size, n_slides=20, seed=2)
        info, wall_w, cpu_w = _timed(lambda: patches.write_dataset(src, tmp))
        split, wall_r, _ = _timed(lambda: patches.read_split(tmp, "train"))
        loader = patches.make_loader(tmp, "train", batch_size=32, shuffle=True, seed=0, num_epochs=1,
                                       drop_remainder=False)
        count, wall_l, _ = _timed(lambda: sum(len(b["label"]) for b in loader))
        return {"dataset_n": n, "write_s": wall_w, "write_cpu_s": cpu_w, "bytes": info["bytes"],
                "write_patches_per_s": n / wall_w, "read_split_patches_per_s": len(split["label"]) / wall_r,
                "loader_patches_per_s": count / wall_l}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    p.add_argument("--gpu", action="store_true", help="accelerator sizes (bigger batches and sizes)")
    args = p.parse_args(argv)
    if not args.gpu:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    result = {"benchmark": "synthetic_throughput", "backend": jax.default_backend(),
              "devices": [str(d) for d in jax.devices()], "loadavg": os.getloadavg()[0]}
    if args.smoke:
        plan = {"gen": [(64, 32, 16)], "baseline": 96, "dataset": 40}
    elif args.gpu:
        plan = {"gen": [(64, 8192, 1024), (224, 2048, 256), (512, 512, 64)], "baseline": 2000, "dataset": 3000}
    else:
        plan = {"gen": [(64, 2048, 128), (224, 128, 32)], "baseline": 2000, "dataset": 3000}
    result["generator"] = [bench_generator(*g) for g in plan["gen"]]
    result.update(baselines(plan["baseline"], 64))
    result.update(bench_dataset(plan["dataset"], 64))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
