"""Static int8 for the OpenVINO encoder (issue 16: "quantisation calibrated on real slices"), measured.

NNCF's post-training quantisation (mixed preset, transformer model type, fast bias correction) of the pipeline's
OpenVINO encoder graph, calibrated on slices of the training CTs (every 4th of ``ts_a``, every 2nd of ``ts_b``),
then timed against the float32 graph and the same graph run in bf16 (interleaved passes over AMOS 0013's 11
slices) with each one's embedding error relative to float32. ``--ignore-types`` leaves the OpenVINO operations of
those types in float (e.g. ``MatMul`` keeps the attention and MLP products, ``Convolution GroupConvolution`` the
convolution stages) to find where the error comes from. NNCF is not a dependency of organsam: ``pip install
nncf`` first.

    .venv/bin/python bench/encoder_int8.py [--threads 2] [--ignore-types MatMul]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import data_dir, model_input  # noqa: E402

from organsam.io import load_volume  # noqa: E402


def _slices(path: Path, step: int) -> list[np.ndarray]:
    """Model inputs (1, 3, 256, 256) of every ``step``-th slice of a CT."""
    return [x[None] for x in model_input(load_volume(path))[::step]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ignore-types", nargs="*", default=[], help="OpenVINO op types NNCF leaves in float")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import nncf
    import openvino as ov

    from organsam.model.openvino_sam import OpenVinoSam, cache_dir
    from organsam.model.sam_core import build_lite_medsam

    OpenVinoSam(build_lite_medsam())  # converts and caches the float32 graphs if they are not there yet
    graph = max(cache_dir().glob("encoder-*/model.xml"), key=lambda p: p.stat().st_mtime)
    data = data_dir()
    calib = _slices(data / "ts_a" / "image.nii.gz", 4) + _slices(data / "ts_b_dicom" / "dicom", 2)
    test = _slices(data / "amos_0013_slab" / "image.nii.gz", 1)
    core = ov.Core()
    model = core.read_model(str(graph))
    t0 = time.perf_counter()
    quantized = nncf.quantize(
        model,
        nncf.Dataset(calib),
        preset=nncf.QuantizationPreset.MIXED,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calib),
        fast_bias_correction=True,
        **({"ignored_scope": nncf.IgnoredScope(types=args.ignore_types)} if args.ignore_types else {}),
    )
    took = time.perf_counter() - t0
    config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    requests = {
        "fp32": core.compile_model(model, "CPU", config).create_infer_request(),
        "bf16": core.compile_model(model, "CPU", {**config, "INFERENCE_PRECISION_HINT": "bf16"}).create_infer_request(),
        "int8": core.compile_model(quantized, "CPU", config).create_infer_request(),
    }
    seconds: dict[str, list[float]] = {name: [] for name in requests}
    outputs: dict[str, list[np.ndarray]] = {}
    for _ in range(2):
        for name, request in requests.items():
            request.infer([test[0]])  # warm-up
            t = time.perf_counter()
            outputs[name] = [np.array(request.infer([x])[0]) for x in test]
            seconds[name].append((time.perf_counter() - t) / len(test))
    print(
        f"calibration: {len(calib)} slices (ts_a, ts_b), quantised in {took:.0f} s, left in float: {args.ignore_types}"
    )
    print(f"test: {len(test)} slices of amos_0013")
    for name, s in seconds.items():
        print(f"{name}: {min(s):.3f} s per slice (best of {len(s)} passes), threads {args.threads}")
    for name in ("bf16", "int8"):
        err = [float(np.linalg.norm(a - b) / np.linalg.norm(a)) for a, b in zip(outputs["fp32"], outputs[name])]
        print(f"{name} embedding relative error: {min(err):.3f} .. {max(err):.3f}")


if __name__ == "__main__":
    main()
