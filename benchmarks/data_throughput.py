"""Images per second of the data pipelines, and the memory of streaming a folder of JPEGs.

Rows:

* ``cifar``: the CIFAR training pipeline (in-memory uint8 images, normalise, random crop with
  4-pixel padding, flip, cutout 16) at batch 96, from ``--cifar`` (a CIFAR-10 ``.npz``; random
  images of the same shape when absent);
* ``imagenet``: the ImageNet training pipeline of ProxylessNAS/DenseNAS (decode JPEG,
  random-resized crop to 224, flip, colour jitter, normalise) at batch 64, and the evaluation
  pipeline (resize 256, centre crop 224), on a generated folder of JPEGs (sides 256-400 px);

each with 0, 2 and 4 DataLoader workers (``--workers``). Then the process tree's resident
memory (main process + workers, read from /proc) while streaming one whole epoch of a folder
of 5,000 and of 20,000 JPEGs with 2 workers: bounded memory means the two peaks are about equal.

Usage::

    python benchmarks/data_throughput.py                       # everything (about 10 minutes on 2 cores)
    python benchmarks/data_throughput.py --images 5000 --skip-stream
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasforge.data import load_dataset  # noqa: E402
from nasforge.data.augment import Augment  # noqa: E402
from nasforge.data.loader import Loader, Split  # noqa: E402
from nasforge.data.sources import ArraySource  # noqa: E402


def make_jpeg_folder(root: Path, n: int, classes: int = 100, seed: int = 0) -> Path:
    """``root/train/cNNN/*.jpg`` (n images) and a small ``root/val``; smooth images, 256-400 px sides."""
    from PIL import Image

    marker = root / f".complete-{n}"
    if marker.exists():
        return root
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            k = i % classes
            folder = root / split / f"c{k:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            w, h = (int(v) for v in rng.integers(256, 401, size=2))
            # a low-frequency colour field plus mild noise: JPEG sizes like photographs, not like noise
            small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
            arr = np.asarray(img, dtype=np.int16) + rng.integers(-12, 13, size=(h, w, 3))
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=85)
    marker.touch()
    return root


def tree_rss_mib(pid: int | None = None) -> float:
    """Resident memory of a process and all its descendants (MiB), from /proc."""
    pid = pid or os.getpid()
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except OSError:
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for p in tree:
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def rate(loader: Loader, images: int, seed: int | None = 1) -> float:
    """Images/s over the first ``images`` images of an epoch (after one warm-up batch)."""
    it = loader.epoch(seed)
    next(it)
    seen, tic = 0, time.perf_counter()
    for x, _ in it:
        seen += x.shape[0]
        if seen >= images:
            break
    return seen / (time.perf_counter() - tic)


def cifar_rows(path: Path | None, workers: list[int], images: int) -> list[tuple]:
    if path is not None and path.exists():
        with np.load(path) as npz:
            x = npz["x_train"].transpose(0, 3, 1, 2).copy()
            y = npz["y_train"].astype(np.int64)
        source_name = path.name
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(5000, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, size=5000)
        source_name = "random uint8"
    src = ArraySource(x, y, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), 255.0)
    split = Split(src, np.arange(len(y)))
    rows = []
    for w in workers:
        loader = Loader(split, 96, augment=Augment(crop_padding=4, flip=True, cutout=16), workers=w)
        rows.append(("cifar train (crop, flip, cutout)", source_name, w, rate(loader, images)))
    return rows


def imagenet_rows(folder: Path, workers: list[int], images: int) -> list[tuple]:
    data = load_dataset("imagenet", folder, seed=0)
    rows = []
    for w in workers:
        data.workers = w
        rows.append(("imagenet train (rrc 224, flip, jitter)", "jpeg folder", w,
                     rate(data.loader(data.train, 64), images)))
        rows.append(("imagenet eval (resize 256, crop 224)", "jpeg folder", w,
                     rate(data.loader(data.train, 64, train=False), images, seed=None)))
    return rows


def stream_peak(folder: Path, workers: int) -> tuple[int, float, float, float]:
    """Stream one epoch of the folder's train split: (images, seconds, RSS before, peak tree RSS) in MiB."""
    data = load_dataset("imagenet", folder, seed=0, valid_fraction=0.0001)
    data.workers = workers
    loader = data.loader(data.train, 64)
    before = tree_rss_mib()
    peak = [before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_mib())
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    seen, tic = 0, time.perf_counter()
    for x, _ in loader.epoch(seed=1):
        seen += x.shape[0]
    seconds = time.perf_counter() - tic
    done.set()
    watcher.join()
    return seen, seconds, before, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10_small.npz")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/nasforge-bench-jpegs"))
    parser.add_argument("--workers", default="0,2,4")
    parser.add_argument("--images", type=int, default=20000, help="JPEGs of the large streaming folder")
    parser.add_argument("--rate-images", type=int, default=768, help="images timed per throughput row")
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    torch.set_num_threads(1)
    print(f"# {_dt.datetime.now().isoformat(timespec='minutes')} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}")
    tic = time.perf_counter()
    small = make_jpeg_folder(args.folder / "n5000", 5000)
    print(f"# generated/checked the 5,000-JPEG folder in {time.perf_counter() - tic:.0f} s")
    rows = cifar_rows(args.cifar, workers, args.rate_images * 8) + imagenet_rows(small, workers, args.rate_images)
    print("\n| pipeline | source | workers | images/s |\n|---|---|--:|--:|")
    for name, source, w, r in rows:
        print(f"| {name} | {source} | {w} | {r:,.0f} |")
    if args.skip_stream:
        return
    tic = time.perf_counter()
    large = make_jpeg_folder(args.folder / f"n{args.images}", args.images)
    print(f"\n# generated/checked the {args.images:,}-JPEG folder in {time.perf_counter() - tic:.0f} s")
    print("\n| folder | images streamed | seconds | images/s | tree RSS before (MiB) | peak tree RSS (MiB) |")
    print("|---|--:|--:|--:|--:|--:|")
    for folder in (small, large):
        seen, seconds, before, peak = stream_peak(folder, 2)
        print(f"| {folder.name} | {seen:,} | {seconds:.0f} | {seen / seconds:,.0f} | {before:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
