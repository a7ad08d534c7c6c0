"""Benchmark Swinv2Backbone (or, with ``--model v1``, the Swin V1 SwinBackbone) and, with
``--compare``, the installed peer implementations (SwinV2: HF transformers, timm, mmpretrain,
torchvision; Swin V1: those and mmdet) on the same input with the same weights.

For every case (input size x dtype x task) it reports the median time, images/s, achieved GFLOP/s,
the share of the machine's measured GEMM floor (every Linear-type matrix product of the run timed in
isolation with the fastest kernel available), peak memory and, with ``--compare``, each peer's time
ratio to ours and the largest output difference; in bf16/fp16 also each implementation's relative
error against its own fp32 output. Runs of the implementations alternate in one
process so that machine noise hits all of them alike.

    python tools/benchmark.py --arch tiny --sizes 512x512 800x1344 --dtypes fp32 bf16 --compare
    python tools/benchmark.py --task train --batch 2 --sizes 512x512 --compare --json out.json
    python tools/benchmark.py --model v1 --sizes 224 512 800x1344 --compare   # Swin V1-T, window 7
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

# The profiler that measures CPU peak memory would log its start and stop at every run.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swinv2_backbone import ARCH_SETTINGS  # noqa: E402
from swinv2_backbone.benchmark.cases import DTYPES, Impl, Result, run_case  # noqa: E402
from swinv2_backbone.benchmark.measure import environment  # noqa: E402
from swinv2_backbone.benchmark.report import (disagreements, first_steps, markdown,  # noqa: E402
                                              scaling, to_json)
from swinv2_backbone.complexity import analyze, spec_from_config  # noqa: E402
from swinv2_backbone.testing import randomize_  # noqa: E402
from swinv2_backbone.testing.peers import (PEER_PACKAGES, PEERS, Variant, Windows,  # noqa: E402
                                           build_peer, ours_with_weights, single_window,
                                           variant_of)
from swinv2_backbone.testing.peers_v1 import (V1_PEER_PACKAGES, V1_PEERS,  # noqa: E402
                                              build_v1_peer, ours_v1)

#: Per model version: the peers that can run beside ours, the distribution providing each, and the
#: default window (the official one: SwinV2 8 at 256 px, Swin V1 7 at 224 px).
MODELS = {"v2": (PEERS, PEER_PACKAGES, 8), "v1": (V1_PEERS, V1_PEER_PACKAGES, 7)}


def parse_size(text: str) -> Tuple[int, int]:
    """``'512'`` or ``'800x1344'`` -> (H, W)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with positive ints, got {text!r}")
    return parts[0], parts[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="v2",
                        help="Swinv2Backbone (v2) or the Swin V1 SwinBackbone (v1)")
    parser.add_argument("--arch", default="tiny", choices=sorted(ARCH_SETTINGS))
    parser.add_argument("--window", type=int, default=None,
                        help="window of every stage (default: 8 for v2, 7 for v1)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(512, 512), (800, 1344)])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32"])
    parser.add_argument("--task", choices=["inference", "train"], default="inference")
    parser.add_argument("--mode", choices=["eager", "compile"], default="eager")
    parser.add_argument("--compare", nargs="*", choices=sorted(set(PEERS) | set(V1_PEERS)),
                        default=None, help="peers to run beside ours (no names: all of the "
                        f"model's installed ones; v2: {', '.join(PEERS)}; v1: {', '.join(V1_PEERS)})")
    parser.add_argument("--with-cp", action="store_true", help="activation checkpointing (ours)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-floor", action="store_true", help="skip the GEMM-floor measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _peers(parser: argparse.ArgumentParser, compare: Optional[List[str]], model: str) -> List[str]:
    """The peers to run: none without ``--compare``, the named ones (refused unless the model
    version has them and they are installed), or every installed one of the model version."""
    names, packages, _ = MODELS[model]
    if compare is None:
        return []
    if not compare:
        return [p for p in names if importlib.util.find_spec(packages[p]) is not None]
    other = [p for p in compare if p not in names]
    if other:
        parser.error(f"--compare {' '.join(other)}: no such peer for --model {model} "
                     f"(its peers: {', '.join(names)})")
    missing = [p for p in compare if importlib.util.find_spec(packages[p]) is None]
    if missing:
        parser.error(f"--compare {' '.join(missing)}: not installed "
                     f"({', '.join(packages[p] for p in missing)})")
    return list(compare)


def _flops(args: argparse.Namespace, hw: Tuple[int, int]) -> float:
    """Analytic FLOPs (2 x MAC) of one step: the forward, x3 for a training step (backward ~2x).
    Swin V1 counts as SwinV2 of the same architecture and windows without the position-bias MLP:
    every other matrix product has the same shape in both."""
    macs = analyze(spec_from_config(arch=args.arch, window_size=args.window), hw).macs
    if args.model == "v1":
        macs = {op: n for op, n in macs.items() if op != "cpb_mlp"}
    return 2 * sum(macs.values()) * args.batch * (3 if args.task == "train" else 1)


def _impls(args: argparse.Namespace, variant: Variant, windows: Windows, peers: List[str],
           hw: Tuple[int, int], dtype_name: str, device: torch.device) -> List[Impl]:
    """Ours (and a copy cast to a low ``dtype_name``), then for every peer ours with the peer's
    weights beside the peer itself."""
    if args.model == "v1":
        ours = ours_v1(variant, args.window, "pad", out_norm=True, with_cp=args.with_cp)
    else:
        ours = ours_with_weights(None, None, variant, windows, True, with_cp=args.with_cp)
    ours = randomize_(ours, args.seed).to(device)
    impls = [Impl("ours", ours, ours)]
    if dtype_name != "fp32":
        low = copy.deepcopy(ours).to(DTYPES[dtype_name])
        impls.append(Impl(f"ours ({dtype_name} model)", low, low, autocast=False, reference="ours"))
    for name in peers:
        if args.model == "v1":
            # Read from the file the peer writes, with the peer's small-map rule (V1_PEER_RULES).
            peer, mine = build_v1_peer(name, variant, args.window, hw, args.seed,
                                       with_cp=args.with_cp)
        else:
            peer = build_peer(name, variant, windows, hw, args.seed)
            # mmpretrain's stage outputs are normed: ours then has output norms too, loaded strictly.
            mine = ours_with_weights(peer.module.state_dict(), name, variant, windows,
                                     name == "mmpretrain", with_cp=args.with_cp)
        mine.to(device)
        peer.module.to(device)
        reference = f"ours ({name} weights)"
        impls += [Impl(reference, mine, mine), Impl(name, peer.module, peer.stages, reference=reference)]
    return impls


def main(argv: Optional[Sequence[str]] = None) -> List[Result]:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--batch and --repeats must be >= 1, --warmup >= 0")
    device = torch.device(args.device)
    peers = _peers(parser, args.compare, args.model)
    if args.window is None:
        args.window = MODELS[args.model][2]
    variant, windows = variant_of(args.arch), single_window(args.window)
    env = environment()
    if args.mode == "compile":
        import torch._inductor.config as inductor_config

        # Freezing (weights as constants, prepacked for oneDNN) is inductor's CPU inference mode.
        inductor_config.freezing = args.task == "inference"
        env["inductor_freezing"] = str(inductor_config.freezing)
    env["model"] = args.model
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    results: List[Result] = []
    for hw in args.sizes:
        torch.manual_seed(args.seed)
        x = torch.randn(args.batch, 3, *hw, device=device)
        flops = _flops(args, hw)
        for dtype_name in args.dtypes:
            impls = _impls(args, variant, windows, peers, hw, dtype_name, device)
            case = run_case(impls, x, dtype_name, args.task, args.mode, args.warmup,
                            args.repeats, not args.no_floor, flops)
            results += case
            print(markdown(case), flush=True)
            for warning in disagreements(case):
                print(warning, flush=True)
            if args.mode == "compile":
                print(first_steps(case), flush=True)
    if len(args.sizes) > 1:
        print(scaling(results), flush=True)
    if args.json:
        args.json.write_text(to_json(env, results))
    return results


if __name__ == "__main__":
    main()
