"""Benchmark Swinv2Backbone (or, with ``--model v1``, the Swin V1 SwinBackbone) and, with
``--compare``, the installed peer implementations (SwinV2: HF transformers, timm, mmpretrain,
torchvision; Swin V1: those and mmdet) on the same input with the same weights.

For every case (input size x batch x dtype x task) it reports the median time, the time per image,
images/s, achieved GFLOP/s, the share of the machine's measured GEMM floor (every Linear-type matrix
product of the run timed in isolation with the fastest kernel available) and the floor's own
GFLOP/s, peak memory and, with ``--compare``, each peer's time ratio to ours and the largest output
difference; in bf16/fp16 also each implementation's relative error against its own fp32 output.
By default the runs of the implementations alternate in one process so that machine noise hits all
of them alike (``runs=alternating``); ``--isolate`` times each implementation in a fresh process of
its own instead (``runs=isolated``), since the peers' times depend on the process's history. Several
``--batch`` values run as separate cases, with a line comparing our per-image time at the largest
batch with the smallest. The environment line names, among the machine's settings, the ISA oneDNN
dispatches to (``onednn_isa``).

``--runtimes onnxruntime openvino`` (or ``torch,onnxruntime,openvino``) adds rows for exported
copies on the same weights, timed alternating with the eager rows and checked against them: ours
exported once for every size, and with ``--compare hf timm`` those peers exported at the case's one
shape (``torch.export`` + the dynamo ONNX exporter), each in onnxruntime and OpenVINO f32 in an fp32
case and in OpenVINO bf16 in a bf16 case (only where the CPU computes bf16 natively). Their rows
carry one more column: the max abs difference against the reference run eagerly in fp32.
``--fixed-size-rows`` adds ours exported at each case's one shape (``tools/export.py --fixed-size``,
static height and width) in the same runtimes: the path the README recommends
where the serving size is known, timed beside the file that serves every size.

    python tools/benchmark.py --arch tiny --sizes 512x512 800x1344 --dtypes fp32 bf16 --compare
    python tools/benchmark.py --sizes 512 --batch 1 4 8 --compare --isolate
    python tools/benchmark.py --task train --batch 2 --sizes 512x512 --compare --json out.json
    python tools/benchmark.py --model v1 --sizes 224 512 800x1344 --compare   # Swin V1-T, window 7
    python tools/benchmark.py --sizes 512 800x1344 --dtypes fp32 bf16 --runtimes onnxruntime openvino
    python tools/benchmark.py --sizes 512 --runtimes openvino openvino-int8 --fixed-size-rows
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# The profiler that measures CPU peak memory would log its start and stop at every run.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

import torch  # noqa: E402

from swinv2_backbone import ARCH_SETTINGS  # noqa: E402
from swinv2_backbone.benchmark.cases import (DTYPES, Impl, Result, compare,  # noqa: E402
                                             measure, run_case)
from swinv2_backbone.benchmark.isolate import (ALTERNATING, ISOLATED, Failure,  # noqa: E402
                                               run_isolated, save_measured)
from swinv2_backbone.benchmark.measure import environment  # noqa: E402
from swinv2_backbone.benchmark.report import (batch_scaling, breakdowns,  # noqa: E402
                                              checkpoint_cost, disagreements, failures,
                                              first_steps, markdown, scaling, to_json)
from swinv2_backbone.cli import int_at_least  # noqa: E402
from swinv2_backbone.complexity import analyze, spec_from_config  # noqa: E402
from swinv2_backbone.deploy import (DEFAULT_MAX_BATCH, DEFAULT_MAX_SIDE,  # noqa: E402
                                    TOOL_RUNTIMES, ExportError, export, export_fixed_size,
                                    load_exported, quantize_int8, runtime_forward)
from swinv2_backbone.deploy.forward import output_names  # noqa: E402
from swinv2_backbone.deploy.targets import onnx_to_openvino  # noqa: E402
from swinv2_backbone.testing import randomize_  # noqa: E402
from swinv2_backbone.testing.peers import (PEER_PACKAGES, PEERS, Variant, Windows,  # noqa: E402
                                           build_peer, ours_with_weights, single_window,
                                           variant_of)
from swinv2_backbone.testing.peers_v1 import (V1_PEER_PACKAGES, V1_PEERS,  # noqa: E402
                                              build_v1_peer, ours_v1)

#: Per model version: the peers that can run beside ours, the distribution providing each, and the
#: default window (the official one: SwinV2 8 at 256 px, Swin V1 7 at 224 px).
MODELS = {"v2": (PEERS, PEER_PACKAGES, 8), "v1": (V1_PEERS, V1_PEER_PACKAGES, 7)}
#: The exported copies timed in a case of each dtype, as (runtime, precision); ``int8`` is ours
#: quantized by NNCF (``--runtimes openvino-int8``), its other operations in f32.
RUNTIME_ROWS = {"fp32": (("onnxruntime", "f32"), ("openvino", "f32"), ("openvino", "int8")),
                "bf16": (("openvino", "bf16"),)}
#: The runtime names ``--runtimes`` takes: the tools' runtimes and ours quantized to int8.
INT8_RUNTIME = "openvino-int8"
BENCH_RUNTIMES = TOOL_RUNTIMES + (INT8_RUNTIME,)
#: Random-normal inputs the benchmark's int8 file is calibrated on (speed only: its accuracy
#: against f32 is that of random weights on random data, and the row shows it).
INT8_CALIBRATION = 4
#: The SwinV2 peers whose fixed-size exports run beside ours.
EXPORTED_PEERS = ("hf", "timm")
#: The name of ours exported at the case's one shape (``--fixed-size-rows``).
FIXED = "ours (fixed size)"


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
    parser.add_argument("--batch", nargs="+", type=int_at_least(1), default=[1],
                        help="images per step; several values run as separate cases")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32"])
    parser.add_argument("--task", choices=["inference", "train"], default="inference")
    parser.add_argument("--mode", choices=["eager", "compile"], default="eager")
    parser.add_argument("--compare", nargs="*", choices=sorted(set(PEERS) | set(V1_PEERS)),
                        default=None, help="peers to run beside ours (no names: all of the "
                        f"model's installed ones; v2: {', '.join(PEERS)}; v1: {', '.join(V1_PEERS)})")
    parser.add_argument("--with-cp", action="store_true", help="activation checkpointing (ours)")
    parser.add_argument("--warmup", type=int_at_least(0), default=2)
    parser.add_argument("--repeats", type=int_at_least(1), default=5)
    parser.add_argument("--no-floor", action="store_true", help="skip the GEMM-floor measurement")
    parser.add_argument("--breakdown", action="store_true",
                        help="also profile one step of ours and print its time per operator "
                             "category (Linear GEMMs, attention GEMMs, copies, ...)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runtimes", nargs="+", default=["torch"], metavar="RUNTIME",
                        help="torch (the eager rows, always run), onnxruntime, openvino: exported "
                             "copies of ours (and of the hf / timm peers compared) beside the eager "
                             f"rows; {INT8_RUNTIME}: ours quantized to int8 (NNCF, calibrated on "
                             f"{INT8_CALIBRATION} random inputs) in fp32 cases; names separated by "
                             "spaces or commas")
    parser.add_argument("--fixed-size-rows", action="store_true",
                        help="with --runtimes: also ours exported at each case's one input shape "
                             "(tools/export.py --fixed-size), in each runtime row but int8")
    parser.add_argument("--isolate", action="store_true",
                        help="time each implementation in a fresh process of its own (default: "
                        "all in this process, their runs alternating)")
    # Internal to --isolate: the child process times this one implementation of the one case its
    # --sizes/--batch/--dtypes name and saves what it measured to --child-out.
    parser.add_argument("--run-impl", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse combinations of options that the parser lets through."""
    if (args.run_impl is None) != (args.child_out is None):
        parser.error("--run-impl and --child-out (internal to --isolate) go together")
    args.runtimes = [n for given in args.runtimes for n in given.split(",") if n]
    unknown = [n for n in args.runtimes if n not in BENCH_RUNTIMES]
    if unknown:
        parser.error(f"--runtimes {' '.join(unknown)}: choose from {', '.join(BENCH_RUNTIMES)}")
    if set(args.runtimes) - {"torch"} and (args.task != "inference" or args.mode != "eager"
                                          or args.isolate or args.device != "cpu"):
        parser.error("--runtimes onnxruntime/openvino time CPU inference next to the eager rows: "
                     "--task inference, --mode eager, --device cpu, without --isolate")
    if args.fixed_size_rows and not set(args.runtimes) - {"torch", INT8_RUNTIME}:
        parser.error("--fixed-size-rows adds exported rows: give --runtimes onnxruntime and/or "
                     "openvino")
    if args.run_impl is not None and (args.isolate or len(args.sizes) > 1 or len(args.batch) > 1
                                      or len(args.dtypes) > 1):
        parser.error("--run-impl (internal to --isolate) times one case: one size, one batch, "
                     "one dtype, without --isolate")


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


def _flops(args: argparse.Namespace, hw: Tuple[int, int], batch: int) -> float:
    """Analytic FLOPs (2 x MAC) of one step: the forward, x3 for a training step (backward ~2x).
    Swin V1 counts as SwinV2 of the same architecture and windows without the position-bias MLP:
    every other matrix product has the same shape in both."""
    macs = analyze(spec_from_config(arch=args.arch, window_size=args.window), hw).macs
    if args.model == "v1":
        macs = {op: n for op, n in macs.items() if op != "cpb_mlp"}
    return 2 * sum(macs.values()) * batch * (3 if args.task == "train" else 1)


def _input(args: argparse.Namespace, hw: Tuple[int, int], batch: int,
           device: torch.device) -> torch.Tensor:
    """The case's seeded input batch (the same in a child of ``--isolate``)."""
    torch.manual_seed(args.seed)
    return torch.randn(batch, 3, *hw, device=device)


def _low_name(dtype_name: str) -> str:
    """The name of ours cast to a low dtype."""
    return f"ours ({dtype_name} model)"


#: Ours without activation checkpointing, timed beside ours under ``--with-cp``.
NO_CP = "ours (no checkpointing)"


def _twin_name(peer: str) -> str:
    """The name of ours with ``peer``'s weights, the peer's reference."""
    return f"ours ({peer} weights)"


class Exports:
    """The exported copies of one run, written once each into ``folder``: ours once for every size
    the run has (one dynamic export serves them all), a peer once per case shape (a fixed-size
    export); and the rows they give a case.

    Args:
        folder: Where the files go (a temporary directory the caller removes).
        runtimes: The runtimes asked for (``--runtimes``).
        sizes: Every input (H, W) of the run.
        batch: The largest batch of the run.
        fixed: Also ours exported at each case's one shape (:data:`FIXED`), in each row's runtime
            and precision but int8.
    """

    def __init__(self, folder: Path, runtimes: Sequence[str], sizes: Sequence[Tuple[int, int]],
                 batch: int, fixed: bool = False) -> None:
        self.folder = folder
        self.runtimes = runtimes
        self.fixed = fixed
        self.sizes = sizes
        self.batch = batch
        self.files: Dict[str, Path] = {}
        self.notes: List[str] = []

    def _ours(self, model: torch.nn.Module) -> Path:
        """Ours exported for every size and batch of the run (the weights are the same in every
        case: the same seed)."""
        if "ours" not in self.files:
            path = self.folder / "ours.onnx"
            export(model, path, outputs=output_names(model),
                   max_side=max(DEFAULT_MAX_SIDE, *(max(s) for s in self.sizes)),
                   max_batch=max(DEFAULT_MAX_BATCH, self.batch))
            self.files["ours"] = path
        return self.files["ours"]

    def _ours_int8(self, model: torch.nn.Module) -> Path:
        """Ours as an OpenVINO IR for every size of the run (the ONNX export's, converted: no
        second trace), quantized to int8 on random-normal inputs of the run's sizes in turn."""
        if "ours-int8" not in self.files:
            f32 = onnx_to_openvino(self._ours(model), self.folder / "ours-f32.xml")
            gen = torch.Generator().manual_seed(0)
            calibration = [torch.randn(1, model.in_channels, *self.sizes[i % len(self.sizes)],
                                       generator=gen) for i in range(INT8_CALIBRATION)]
            quantize_int8(f32, self.folder / "ours-int8.xml", calibration)
            self.files["ours-int8"] = self.folder / "ours-int8.xml"
        return self.files["ours-int8"]

    def _ours_fixed(self, model: torch.nn.Module, shape: Tuple[int, ...]) -> Path:
        """Ours exported at the one ``shape`` (N, C, H, W), as ``tools/export.py --fixed-size``."""
        key = f"ours-fixed-{'x'.join(map(str, shape))}"
        if key not in self.files:
            path = self.folder / f"{key}.onnx"
            export(model, path, outputs=output_names(model), max_batch=shape[0],
                   fixed_size=(shape[2], shape[3]))
            self.files[key] = path
        return self.files[key]

    def _peer(self, impl: Impl, shape: Tuple[int, ...]) -> Path:
        key = f"{impl.name}-{'x'.join(map(str, shape))}"
        if key not in self.files:
            self.files[key] = export_fixed_size(impl.module, impl.forward, torch.zeros(shape),
                                                self.folder / f"{key}.onnx")
        return self.files[key]

    def _row(self, label: str, name: str, reference: str, shape: Tuple[int, ...],
             load: Callable[[], Callable], module: torch.nn.Module) -> List[Impl]:
        """The row ``label: name`` running what ``load()`` returns, or none (and a note) when the
        export or the loading fails."""
        try:
            forward = load()
        except ExportError as err:
            self.notes.append(f"not run: {label}: {name} at {shape[2]}x{shape[3]}: {err}")
            return []
        return [Impl(f"{label}: {name}", module, forward, autocast=False, reference=reference,
                     runtime=label)]

    def rows(self, impls: Sequence[Impl], dtype_name: str, shape: Tuple[int, ...]) -> List[Impl]:
        """The exported copies of ``impls``' ours (own weights; with ``fixed`` also at the one
        shape) and hf / timm peers for a case of ``dtype_name`` and input ``shape``, each referring
        to the eager implementation it must reproduce (a peer: ours with its weights)."""
        names = {impl.name for impl in impls}
        rows = []
        for runtime, precision in RUNTIME_ROWS.get(dtype_name, ()):
            int8 = precision == "int8"
            if (INT8_RUNTIME if int8 else runtime) not in self.runtimes:
                continue
            threads = torch.get_num_threads()
            label = f"{runtime} {precision}"
            for impl in impls:
                if impl.name == "ours":
                    # an int8 file holds its own precision: its other operations run in f32
                    files = [("ours", self._ours_int8 if int8 else self._ours)]
                    if self.fixed and not int8:
                        files.append((FIXED, lambda m: self._ours_fixed(m, shape)))
                    for name, file_of in files:
                        rows += self._row(label, name, "ours", shape, lambda: runtime_forward(
                            impl.module, runtime, "f32" if int8 else precision,
                            file_of(impl.module), threads, [shape[2:]], shape[0]), impl.module)
                elif impl.name in EXPORTED_PEERS and not int8:
                    twin = _twin_name(impl.name)
                    rows += self._row(label, impl.name, twin if twin in names else impl.name,
                                      shape, lambda: load_exported(self._peer(impl, shape), runtime,
                                                                   threads, precision), impl.module)
        return rows


def impl_names(dtype_name: str, peers: Sequence[str], with_cp: bool = False) -> List[str]:
    """The implementations of a case in run order: ours, with ``with_cp`` ours without
    checkpointing (:data:`NO_CP`, the yardstick of its cost), ours cast to a low ``dtype_name``,
    then for every peer ours with the peer's weights and the peer."""
    names = ["ours"] + ([NO_CP] if with_cp else [])
    names += [] if dtype_name == "fp32" else [_low_name(dtype_name)]
    for peer in peers:
        names += [_twin_name(peer), peer]
    return names


def _impls(args: argparse.Namespace, variant: Variant, windows: Windows, peers: Sequence[str],
           hw: Tuple[int, int], dtype_name: str, device: torch.device,
           only: Optional[str] = None, exports: Optional[Exports] = None,
           batch: int = 1) -> List[Impl]:
    """The implementations :func:`impl_names` lists, ours and each peer's twin of ours with the same
    weights. With ``only`` just that one (a child of ``--isolate``), built with what its weights
    come from, which is dropped when this returns (before the timing): ours cast to the low dtype
    is ours built and cast in place, ours with a peer's weights builds the peer, and under
    ``--model v1`` a peer also builds its twin (``build_v1_peer`` loads ours from the file the peer
    writes). With ``exports``, the exported copies (:meth:`Exports.rows`) of a ``batch`` follow."""
    def wanted(name: str) -> bool:
        return only is None or name == only

    low_wanted = dtype_name != "fp32" and wanted(_low_name(dtype_name))
    plain_wanted = args.with_cp and wanted(NO_CP)
    impls = []
    if wanted("ours") or low_wanted or plain_wanted:
        if args.model == "v1":
            ours = ours_v1(variant, args.window, "pad", out_norm=True, with_cp=args.with_cp)
        else:
            ours = ours_with_weights(None, None, variant, windows, True, with_cp=args.with_cp)
        ours = randomize_(ours, args.seed).to(device)
        if wanted("ours"):
            impls.append(Impl("ours", ours, ours))
        if plain_wanted:  # a copy unless ours itself is not timed
            plain = copy.deepcopy(ours) if wanted("ours") else ours
            plain.with_cp = False
            impls.append(Impl(NO_CP, plain, plain, reference="ours"))
        if low_wanted:  # a copy unless ours itself is not timed
            low = (copy.deepcopy(ours) if wanted("ours") else ours).to(DTYPES[dtype_name])
            impls.append(Impl(_low_name(dtype_name), low, low, autocast=False, reference="ours"))
    for name in peers:
        reference = _twin_name(name)
        if not (wanted(reference) or wanted(name)):
            continue
        if args.model == "v1":
            # Read from the file the peer writes, with the peer's small-map rule (V1_PEER_RULES).
            peer, mine = build_v1_peer(name, variant, args.window, hw, args.seed,
                                       with_cp=args.with_cp)
        else:
            peer, mine = build_peer(name, variant, windows, hw, args.seed), None
            if wanted(reference):
                # mmpretrain's stage outputs are normed: ours then has output norms too, loaded
                # strictly.
                mine = ours_with_weights(peer.module.state_dict(), name, variant, windows,
                                         name == "mmpretrain", with_cp=args.with_cp)
        if wanted(reference):
            impls.append(Impl(reference, mine.to(device), mine))
        if wanted(name):
            impls.append(Impl(name, peer.module.to(device), peer.stages, reference=reference))
    if exports is not None:
        impls += exports.rows(impls, dtype_name, (batch, 3, *hw))
    return impls


def _child_command(args: argparse.Namespace, peers: Sequence[str], hw: Tuple[int, int],
                   batch: int, dtype_name: str, impl: str, out: Path) -> List[str]:
    """The command line of the ``--isolate`` child that times ``impl`` in the case (``hw``,
    ``batch``, ``dtype_name``) and saves to ``out``: every other option as this run has it."""
    command = [sys.executable, str(Path(__file__).resolve()), "--model", args.model,
               "--arch", args.arch, "--window", str(args.window), "--sizes", f"{hw[0]}x{hw[1]}",
               "--batch", str(batch), "--dtypes", dtype_name, "--task", args.task,
               "--mode", args.mode, "--warmup", str(args.warmup), "--repeats", str(args.repeats),
               "--device", args.device, "--seed", str(args.seed), "--run-impl", impl,
               "--child-out", str(out)]
    if peers:
        command += ["--compare", *peers]
    if args.with_cp:
        command.append("--with-cp")
    if args.no_floor:
        command.append("--no-floor")
    if args.breakdown:
        command.append("--breakdown")
    return command


def _run_child(parser: argparse.ArgumentParser, args: argparse.Namespace, variant: Variant,
               windows: Windows, peers: List[str], device: torch.device) -> List[Result]:
    """An ``--isolate`` child: time ``--run-impl`` alone on the one case (as :func:`run_case` times
    each implementation) and save its result and outputs to ``--child-out`` for the parent."""
    hw, batch, dtype_name = args.sizes[0], args.batch[0], args.dtypes[0]
    names = impl_names(dtype_name, peers, args.with_cp)
    if args.run_impl not in names:
        parser.error(f"--run-impl {args.run_impl}: not an implementation of this case (its "
                     f"implementations: {', '.join(names)})")
    impls = _impls(args, variant, windows, peers, hw, dtype_name, device, only=args.run_impl)
    measured = measure(impls, _input(args, hw, batch, device), dtype_name, args.task, args.mode,
                       args.warmup, args.repeats, not args.no_floor, _flops(args, hw, batch),
                       args.breakdown)
    save_measured(measured, args.child_out)
    return measured.results


def _run_case(args: argparse.Namespace, variant: Variant, windows: Windows, peers: List[str],
              hw: Tuple[int, int], batch: int, dtype_name: str, device: torch.device,
              exports: Optional[Exports] = None) -> Tuple[List[Result], List[Failure]]:
    """One case, its implementations alternating in this process or (``--isolate``) each in a
    child process; the results and the implementations that failed (only a child can)."""
    flops = _flops(args, hw, batch)
    if not args.isolate:
        impls = _impls(args, variant, windows, peers, hw, dtype_name, device, exports=exports,
                       batch=batch)
        return run_case(impls, _input(args, hw, batch, device), dtype_name, args.task, args.mode,
                        args.warmup, args.repeats, not args.no_floor, flops, args.breakdown), []
    measured, failed = run_isolated(
        impl_names(dtype_name, peers, args.with_cp),
        lambda name, out: _child_command(args, peers, hw, batch, dtype_name, name, out))
    return compare(measured), [Failure(name, hw, batch, dtype_name, args.task, args.mode, why)
                               for name, why in failed.items()]


def main(argv: Optional[Sequence[str]] = None) -> List[Result]:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    device = torch.device(args.device)
    peers = _peers(parser, args.compare, args.model)
    if args.window is None:
        args.window = MODELS[args.model][2]
    variant, windows = variant_of(args.arch), single_window(args.window)
    if args.mode == "compile":
        import torch._inductor.config as inductor_config

        # Freezing (weights as constants, prepacked for oneDNN) is inductor's CPU inference mode.
        inductor_config.freezing = args.task == "inference"
    if args.run_impl is not None:
        return _run_child(parser, args, variant, windows, peers, device)
    env = environment()
    if args.mode == "compile":
        env["inductor_freezing"] = str(args.task == "inference")
    env["model"] = args.model
    env["runs"] = ISOLATED if args.isolate else ALTERNATING
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    results: List[Result] = []
    failed: List[Failure] = []
    with contextlib.ExitStack() as stack:
        exports = None
        if set(args.runtimes) - {"torch"}:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="swinv2-bench-")))
            exports = Exports(folder, args.runtimes, args.sizes, max(args.batch),
                              args.fixed_size_rows)
        for hw in args.sizes:
            for batch in args.batch:
                for dtype_name in args.dtypes:
                    case, case_failed = _run_case(args, variant, windows, peers, hw, batch,
                                                  dtype_name, device, exports)
                    results += case
                    failed += case_failed
                    print(markdown(case, env["runs"]), flush=True)
                    notes = exports.notes if exports is not None else []
                    for line in (failures(case_failed) + disagreements(case) + breakdowns(case)
                                 + notes):
                        print(line, flush=True)
                    notes.clear()
                    if args.mode == "compile":
                        print(first_steps(case), flush=True)
    if len(args.sizes) > 1:
        print(scaling(results), flush=True)
    if args.task == "inference":
        for line in batch_scaling(results):
            print(line, flush=True)
    for line in checkpoint_cost(results, NO_CP):
        print(line, flush=True)
    if args.json:
        args.json.write_text(to_json(env, results, failed))
    return results


if __name__ == "__main__":
    main()
