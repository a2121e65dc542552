"""``mono-quant export FILE --script model.py --to onnx|compressed-tensors --out PATH``: a quantized
file in a layout other runtimes load (docs/deploy.md).

``FILE`` is opened as a run's result (``open_quantized`` with the model's script), then written as
an ONNX QDQ model (``export_onnx``: ONNX Runtime, TensorRT, ...; traced on ``--example``, one
sample as the calibration folder's files hold them) or a compressed-tensors folder
(``save_quantized(..., format="compressed-tensors")``: transformers, vLLM).  Before a
compressed-tensors export, what ``compressed_tensors_problems`` finds (layers written float,
schemes vLLM cannot run) is printed as warnings; ``--strict`` stops there instead (exit 1).

The flags are checked, and the ``[export]`` extra looked for, before torch loads anything: a
missing dependency names the extra to install.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, QuantizedFileError, ValidationFailed
from ..report import human_bytes
from .arguments import add_debug, canonical, positive_int
from .progress_line import ProgressPrinter
from .results import _shown_path

if TYPE_CHECKING:
    from ..quantizer import QuantResult

EXAMPLES = """\
examples:
  mono-quant export model.int8.safetensors --script model.py --to onnx --example calib/x0.pt \\
      --out model.int8.onnx
  mono-quant export model.int8.safetensors --script model.py --to onnx --example calib/ \\
      --opset 21 --static-batch --out model.int8.onnx     # the folder's first sample
  mono-quant export model.int4.safetensors --script model.py --to compressed-tensors --out model-int4/
  mono-quant export model.int4.safetensors --script model.py --to compressed-tensors --strict --out model-int4/

exit status: 0 success, 1 --strict and the export has problems (listed on stderr; nothing written),
2 bad usage or input (FILE not written by mono-quant, a missing script or example, an unwritable
--out, the [export] extra not installed, a layer the exporter cannot express)
"""

TARGETS = ("onnx", "compressed-tensors")
#: The extra that brings the export dependencies.
EXTRA = "pip install 'mono-quant[export]'"
#: Import names each target needs.
NEEDS = {"onnx": ("onnx", "onnxruntime"), "compressed-tensors": ("compressed_tensors",)}
#: Flags that only mean something for one target.
ONLY_FOR = {"--example": "onnx", "--opset": "onnx", "--static-batch": "onnx", "--strict": "compressed-tensors"}


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``export``."""
    p = commands.add_parser(
        "export",
        help="export a quantized file to ONNX or compressed-tensors",
        epilog=EXAMPLES,
        description=(
            "Write a file made by mono-quant as an ONNX model with QuantizeLinear/DequantizeLinear "
            "(ONNX Runtime, TensorRT) or as a compressed-tensors folder (transformers, vLLM)."
        ),
    )
    p.set_defaults(command=run)
    p.add_argument("file", metavar="FILE", help="a .safetensors or .pt file written by mono-quant")
    model = p.add_argument_group("model")
    model.add_argument("--script", required=True, metavar="FILE.py", help="the script defining the float model")
    model.add_argument("--entry", metavar="NAME", help="factory function, class or instance in the script")
    model.add_argument("--entry-kwargs", metavar="JSON", help="keyword arguments for the entry, e.g. '{\"width\": 8}'")
    out = p.add_argument_group("export")
    out.add_argument("--to", required=True, type=canonical, choices=TARGETS, help="the layout to write")
    out.add_argument(
        "--out", required=True, metavar="PATH", help="onnx: a .onnx file; compressed-tensors: a folder (new or empty)"
    )
    out.add_argument(
        "--example",
        metavar="FILE|DIR",
        help="onnx, required: an example input (.pt/.pth/.safetensors/.npy/.npz as in a calibration "
        "folder), or a calibration folder (its first sample)",
    )
    out.add_argument("--opset", type=positive_int, metavar="N", help="onnx: the opset (default: the exporter's)")
    out.add_argument(
        "--static-batch", action="store_true", help="onnx: fix the batch size to the example's (default: dynamic)"
    )
    out.add_argument(
        "--strict",
        action="store_true",
        help="compressed-tensors: stop (exit 1, nothing written) when the pre-export check finds problems",
    )
    add_debug(p)


def run(args: argparse.Namespace) -> int:
    """Check the flags and the extra, open FILE with its script, export it, print one summary line."""
    check_flags(args)
    check_extra(args.to)
    check_input(args.file, args.script)
    out = check_output(args.to, args.out)
    printer = ProgressPrinter(sys.stderr)
    try:
        printer(0, 0, f"loading {os.path.basename(args.file)}")
        result = open_result(args)
        example = None
        if args.to == "onnx":
            printer(0, 0, f"reading {os.path.basename(args.example.rstrip(os.sep))}")
            example = read_example(args.example)
        else:
            printer.finish()  # the warnings start on a clean line, not after a terminal bar
            check_problems(args, result)
        printer(0, 0, f"exporting {os.path.basename(out.rstrip(os.sep))}")
        line = export(args, result, example, out)
    finally:
        printer.finish()
    print(line)
    return 0


# -- checks before torch loads --------------------------------------------------------------
def check_flags(args: argparse.Namespace) -> None:
    """``--example`` is required by onnx; flags of the other target are refused, naming the flag."""
    if args.to == "onnx" and not args.example:
        raise ConfigError(
            "--example: --to onnx needs an example input to trace the model with: a calibration "
            "file (e.g. calib/x0.pt) or a calibration folder",
            key="--example",
        )
    given = {
        "--example": args.example is not None,
        "--opset": args.opset is not None,
        "--static-batch": args.static_batch,
        "--strict": args.strict,
    }
    for flag, target in ONLY_FOR.items():
        if given[flag] and args.to != target:
            raise ConfigError(f"{flag}: only used with --to {target}, not --to {args.to}", key=flag)


def missing_modules(target: str) -> list[str]:
    """The export dependencies of ``target`` that are not installed."""
    return [name for name in NEEDS[target] if importlib.util.find_spec(name) is None]


def check_extra(target: str) -> None:
    """A ConfigError (exit 2) naming the extra when a dependency of ``target`` is missing."""
    missing = missing_modules(target)
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f"--to {target}: needs {', '.join(missing)}, which {verb} not installed; install the extra: {EXTRA}",
            key="--to",
        )


def check_input(path: str, script: str) -> None:
    """FILE and the script exist (the loader says what is wrong with their content)."""
    from ..jobs.run import check_sources

    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "no such file"
        raise QuantizedFileError(f"{path}: {what}")
    check_sources(script, None, None)


def check_output(target: str, path: str) -> str:
    """``--out`` where it can be written: a .onnx file, or a folder (the compressed-tensors writer
    checks that one itself: a file there, or a non-empty folder not ours, is refused)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{path}: the folder {folder} does not exist")
    if target == "onnx":
        if not path.lower().endswith(".onnx"):
            raise ConfigError(f"--out: {path}: unknown ONNX model extension; --to onnx writes a .onnx file")
        if os.path.isdir(path):
            raise ConfigError(f"{path}: is a folder; --to onnx writes a .onnx file")
    return path


# -- the work --------------------------------------------------------------------------------
def open_result(args: argparse.Namespace) -> QuantResult:
    """FILE as a QuantResult, its float architecture from the script."""
    from ..loading.entries import parse_entry_kwargs
    from ..serialization.open_result import open_quantized

    kwargs = parse_entry_kwargs(args.entry_kwargs, "--entry-kwargs")
    return open_quantized(args.file, args.script, entry=args.entry, entry_kwargs=kwargs or None)


def read_example(path: str) -> Any:
    """One input as a calibration file holds it (a tensor, a tuple or a dict of tensors): the file
    ``path``, or the first sample of the calibration folder ``path``; errors name the file."""
    from pathlib import Path

    from ..errors import CalibrationError
    from ..loading import load_calibration
    from ..loading.calibration_files import CALIBRATION_SUFFIXES, read_batch

    if os.path.isdir(path):
        return load_calibration(path, samples=1, check=False)[0]
    if not os.path.isfile(path):
        raise CalibrationError(f"{path}: no such example file (--example)")
    if not path.lower().endswith(CALIBRATION_SUFFIXES):
        raise CalibrationError(
            f"{path}: not an example input; --example takes {', '.join(CALIBRATION_SUFFIXES)} files "
            "as in a calibration folder, or the folder"
        )
    try:
        return read_batch(Path(path))
    except CalibrationError as exc:  # its message names the file only by its base name
        raise CalibrationError(f"--example {path}: {str(exc).removeprefix(os.path.basename(path) + ': ')}") from exc


def check_problems(args: argparse.Namespace, result: QuantResult) -> None:
    """What the compressed-tensors export cannot express or consumers cannot run: warnings, or with
    ``--strict`` a failed check (exit 1) before anything is written."""
    from ..serialization.compressed_tensors import compressed_tensors_problems

    problems = compressed_tensors_problems(result)
    for problem in problems:
        print(f"mono-quant: warning: {problem}", file=sys.stderr)
    if problems and args.strict:
        n = len(problems)
        raise ValidationFailed(
            f"{args.file}: {n} problem{'s' if n > 1 else ''} for compressed-tensors (listed above); "
            f"nothing written to {args.out} (change the settings as they say, or export without --strict)"
        )


def export(args: argparse.Namespace, result: QuantResult, example: Any, out: str) -> str:
    """Write the export; the summary line of what was written."""
    source = os.path.basename(str((result.source or {}).get("quantized_path", args.file)))
    if args.to == "compressed-tensors":
        from ..serialization.compressed_tensors import plan_layers
        from ..serialization.save import save_quantized

        size = save_quantized(result, out, format="compressed-tensors")
        layers = plan_layers(result.model)
        kept = sum(p.float_reason is not None for p in layers)
        what = f"compressed-tensors folder, {len(os.listdir(out))} files, {human_bytes(size)}"
        return summary(out, what, source, f"{len(layers) - kept} layers quantized, {kept} written float")
    from ..export.onnx_qdq import export_onnx  # type: ignore[import-not-found,unused-ignore]

    written = export_onnx(result, example, out, opset=args.opset, dynamic_batch=not args.static_batch)
    n = len(written.layers)
    what = f"ONNX QDQ opset {written.opset}, {human_bytes(os.path.getsize(out))}"
    return summary(out, what, source, f"{n} quantized layer{'' if n == 1 else 's'}")


def summary(path: str, what: str, source: str, layers: str) -> str:
    """``wrote q.onnx (ONNX QDQ opset 17, 6.1 KiB; from q.safetensors, 2 quantized layers)``, or for a
    folder ``wrote ct (compressed-tensors folder, 3 files, 5.2 KiB; from q.safetensors, 2 layers
    quantized, 0 written float)``."""
    return f"wrote {_shown_path(path)} ({what}; from {source}, {layers})"
