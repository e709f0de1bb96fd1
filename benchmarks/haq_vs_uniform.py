"""HAQ mixed precision vs uniform fixed-bit quantization on a real model and dataset.

A small MobileNet-like network (a stem conv, depthwise-separable blocks, a classifier) is
trained on the CIFAR-10 subset in ../shared/data when it is present, else on digits.
Then:

1. size budgets: for each uniform width k (``--bits``), the budget is exactly the weight
   size of the uniform k-bit model (activations 8 bits for both); HAQ searches weight bits
   under it, and both policies get the same fine-tune. HAQ should be at least as accurate
   at the same or smaller size.
2. latency budgets: on each accelerator model, the budget is the modelled latency of the
   uniform 4-bit (weights and activations) model; HAQ searches both. The table shows how
   the bits of depthwise and pointwise layers differ between the two designs.
3. measured latency (``onnxruntime``): every layer timed alone on this CPU's ONNX Runtime,
   float and int8 (QDQ, fused into QLinearConv/QLinearMatMul); the budget is the measured
   latency of the uniform W4/A4 model, compared with uniform W4/A4 and W8/A8.

As the HAQ code: the first and last layers stay at 8 bits (in the uniform baselines too,
whose sizes/latencies are the budgets), and every episode's reward follows a short
fine-tune (one epoch of ``--episode-finetune-images`` training images; the HAQ code: 20,000).

    python benchmarks/haq_vs_uniform.py --threads 1        # default settings (use 1 thread on a busy machine)
    python benchmarks/haq_vs_uniform.py --episodes 6 --warmup 2 --train-epochs 1 --data digits   # smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nasforge.data import load_dataset
from nasforge.hardware.accelerators import make_accelerator
from nasforge.quant import (
    Budget,
    format_value,
    layer_infos,
    quantized_size_bytes,
    wrap_model,
)
from nasforge.quant.env import finetune_steps
from nasforge.report.sections.haq import plot_bits
from nasforge.strategies.haq import HaqSearch

CIFAR = ROOT.parent / "shared" / "data" / "cifar10_small.npz"


def mobile_net(in_ch: int, classes: int, width: int = 16, stem_stride: int = 2) -> nn.Module:
    """Stem conv, five depthwise-separable blocks (two with stride 2), global pool, linear classifier."""
    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
                nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    w = width
    return nn.Sequential(
        nn.Conv2d(in_ch, w, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
        *block(w, 2 * w, 1), *block(2 * w, 4 * w, 2), *block(4 * w, 4 * w, 1), *block(4 * w, 8 * w, 2),
        *block(8 * w, 8 * w, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, classes))


def mean_bits(policy, infos, depthwise: bool) -> tuple[float, float]:
    rows = [p for p, f in zip(policy, infos) if f.depthwise == depthwise and f.kind == "conv"]
    return float(np.mean([w for w, _ in rows])), float(np.mean([a for _, a in rows]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="auto", choices=("auto", "cifar10", "digits"))
    ap.add_argument("--episodes", type=int, default=150, help="HAQ episodes per search")
    ap.add_argument("--warmup", type=int, default=20, help="random warm-up episodes")
    ap.add_argument("--train-epochs", type=int, default=15, help="float training epochs")
    ap.add_argument("--finetune-epochs", type=int, default=2, help="fine-tune epochs of every compared policy")
    ap.add_argument("--episode-finetune-images", type=int, default=1024,
                    help="images of the per-episode fine-tune epoch (HAQ code: 20000; 0: none)")
    ap.add_argument("--targets", default="size,bitserial,bitfusion,onnxruntime",
                    help="which comparisons to run: size, bitserial, bitfusion, onnxruntime")
    ap.add_argument("--bits", default="3,4", help="uniform widths whose sizes are the size budgets")
    ap.add_argument("--valid-fraction", type=float, default=0.2, help="training share held out to score episodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--img-dir", default=str(ROOT / "docs" / "img"), help="where the bit plots go ('' = none)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tic = time.time()

    name = args.data
    if name == "auto":
        name = "cifar10" if CIFAR.is_file() else "digits"
    data = load_dataset(name, CIFAR if name == "cifar10" else None, seed=args.seed, valid_fraction=args.valid_fraction)
    torch.manual_seed(args.seed)
    model = mobile_net(data.input_shape[0], data.num_classes, stem_stride=2 if name == "cifar10" else 1)
    steps = args.train_epochs * -(-len(data.y_train) // 64)
    t0 = time.time()
    finetune_steps(model, data.x_train, data.y_train, steps=steps, lr=0.05, batch_size=64, seed=args.seed,
                   weight_decay=4e-5, cosine=True)
    model.eval()
    infos = layer_infos(wrap_model(model), data.input_shape)
    print(f"data: {data.describe()}; model: {len(infos)} quantizable layers "
          f"({sum(f.depthwise for f in infos)} depthwise), {sum(f.weight_params for f in infos):,} weights; "
          f"trained {args.train_epochs} epochs in {time.time() - t0:.0f} s")
    base = {"episodes": args.episodes, "warmup": args.warmup, "finetune_epochs": args.finetune_epochs,
            "finetune_images": max(args.episode_finetune_images, 1)}
    if args.episode_finetune_images <= 0:
        base["finetune_steps"] = 0
    targets = set(args.targets.split(","))
    img = Path(args.img_dir) if args.img_dir else None

    def uniform(k: int, a: int) -> list[tuple[int, int]]:
        """k-bit weights, a-bit inputs, the first and last layers at 8 bits (as HAQ's policies)."""
        return [(8, 8) if i in (0, len(infos) - 1) else (k, a) for i in range(len(infos))]

    # --- 1. size budgets -------------------------------------------------------------
    size_rows = []
    for k in [int(b) for b in args.bits.split(",")] if "size" in targets else []:
        target = quantized_size_bytes([f.weight_params for f in infos], [w for w, _ in uniform(k, 8)])
        search = HaqSearch(model, data, Budget("size", float(target), relative=False), seed=args.seed,
                           config=dict(base, abits=8))
        haq = search.run().metrics
        size_rows.append((k, target, haq, search.evaluate_policy(uniform(k, 8))))
        if img:
            plot_bits(haq["layers"], img / f"haq_size_{k}bit.png",
                      title=f"HAQ weight bits under the uniform {k}-bit size ({format_value('size', target)})")
    print("\nSize budgets (weights searched, activations 8 bits; same fine-tune for both):")
    print(f"{'budget':<26}{'policy':<11}{'weight size':>13}{'<= budget':>11}{'test acc':>10}{'before ft':>11}")
    for k, target, haq, uni in size_rows:
        for label, r in (("HAQ", haq), (f"uniform {k}", uni)):
            print(f"{'= uniform ' + str(k) + '-bit ' + format_value('size', target):<26}{label:<11}"
                  f"{format_value('size', r['size_bytes']):>13}{r['size_bytes'] <= target!s:>11}"
                  f"{100 * r['test_acc']:>9.2f}%{100 * r['quant_test_acc_before_finetune']:>10.2f}%")
    if size_rows:
        print(f"float model test accuracy: {100 * size_rows[0][2]['float_test_acc']:.2f}%; best episodes: "
              + ", ".join(f"{k}-bit budget {haq['best_episode']}" for k, _, haq, _ in size_rows))

    # --- 2. latency budgets on each accelerator ------------------------------------------
    lat_rows = []
    for acc_name in [a for a in ("bitserial", "bitfusion") if a in targets]:
        acc = make_accelerator(acc_name)
        target = acc.model_cost(infos, uniform(4, 4))[0]
        search = HaqSearch(model, data, Budget("latency", target, relative=False), accelerator=acc, seed=args.seed,
                           config=base)
        haq = search.run().metrics
        lat_rows.append((acc_name, target, haq, search.evaluate_policy(uniform(4, 4))))
        if img:
            plot_bits(haq["layers"], img / f"haq_latency_{acc_name}.png",
                      title=f"HAQ under the uniform 4/4-bit latency on {acc_name}")
    print("\nLatency budgets (= modelled latency of uniform W4/A4 on each design; weights and activations searched):")
    print(f"{'accelerator':<12}{'policy':<11}{'latency':>11}{'<= budget':>11}{'test acc':>10}{'before ft':>11}"
          f"{'dw W/A':>11}{'pw W/A':>11}")
    for acc_name, target, haq, uni in lat_rows:
        for label, r in (("HAQ", haq), ("uniform 4", uni)):
            pol = [tuple(p) for p in r["policy"]]
            dw, pw = mean_bits(pol, infos, True), mean_bits(pol, infos, False)
            print(f"{acc_name:<12}{label:<11}{format_value('latency', r['latency']):>11}"
                  f"{r['latency'] <= target * (1 + 1e-9)!s:>11}{100 * r['test_acc']:>9.2f}%"
                  f"{100 * r['quant_test_acc_before_finetune']:>10.2f}%"
                  f"{dw[0]:>6.1f}/{dw[1]:<4.1f}{pw[0]:>6.1f}/{pw[1]:<4.1f}")
    for acc_name, _, haq, _ in lat_rows:
        print(f"{acc_name} HAQ (best episode {haq['best_episode']}) W/A per layer: "
              + " ".join(f"{w}/{a}{'dw' if f.depthwise else ''}" for (w, a), f in zip(haq["policy"], infos)))

    # --- 3. latency measured on ONNX Runtime's int8 kernels ---------------------------------
    if "onnxruntime" in targets:
        t0 = time.time()
        probe = HaqSearch(model, data, "latency=100", accelerator="onnxruntime", seed=args.seed,
                          config=dict(base, episodes=1, ort_threads=args.threads))
        table = probe.accelerator
        target = probe.env.cost(uniform(4, 4)).latency
        sums = {k: sum(v[k] for v in table.table.values()) for k in ("int8", "float")}
        print(f"\nONNX Runtime per-layer latency (batch 1, {args.threads} threads, measured in "
              f"{time.time() - t0:.0f} s): sum int8 {format_value('latency', sums['int8'])}, "
              f"sum float {format_value('latency', sums['float'])}")
        for f in infos:
            row = table.table[f.name]
            print(f"  {f.name:<6}{'dw' if f.depthwise else f.kind:<7}int8 {1e6 * row['int8']:8.1f} us  "
                  f"float {1e6 * row['float']:8.1f} us")
        search = HaqSearch(model, data, Budget("latency", target, relative=False), accelerator=table,
                           seed=args.seed, config=base)
        haq = search.run().metrics
        rows = [("HAQ", haq), ("uniform 4/4", search.evaluate_policy(uniform(4, 4))),
                ("uniform 8/8", search.evaluate_policy(uniform(8, 8)))]
        print(f"\nMeasured latency budget (= uniform W4/A4 on ONNX Runtime int8, "
              f"{format_value('latency', target)}):")
        print(f"{'policy':<13}{'latency':>11}{'<= budget':>11}{'test acc':>10}{'before ft':>11}{'mean W/A':>11}")
        for label, r in rows:
            pol = [tuple(p) for p in r["policy"]]
            print(f"{label:<13}{format_value('latency', r['latency']):>11}{r['latency'] <= target * (1 + 1e-9)!s:>11}"
                  f"{100 * r['test_acc']:>9.2f}%{100 * r['quant_test_acc_before_finetune']:>10.2f}%"
                  f"{np.mean([w for w, _ in pol]):>6.1f}/{np.mean([a for _, a in pol]):<4.1f}")
        print(f"onnxruntime HAQ (best episode {haq['best_episode']}) W/A per layer: "
              + " ".join(f"{w}/{a}{'dw' if f.depthwise else ''}" for (w, a), f in zip(haq["policy"], infos)))
    print(f"\ntotal wall time {time.time() - tic:.0f} s (threads {args.threads})")


if __name__ == "__main__":
    main()
