"""Numbers published in the paper, shipped as data with their source.

Y. Matsubara, D. Callegaro, S. Baidya, M. Levorato, S. Singh, "Head Network Distillation:
Splitting Distilled Deep Neural Networks for Resource-Constrained Edge Computing Systems",
IEEE Access, 2020 (an open-access journal). Each number below names the table or figure of the
paper it comes from.

Kept as a Python module rather than JSON so that it ships with the package without any
package-data setting. :func:`as_json` gives the same content as a JSON-ready dict, and
``analysis.profiles.read_profile`` reads device profiles in that layout too.

Units: seconds, bytes, percent. The paper's KB are 1024 bytes: its code computes sizes as
``sys.getsizeof(pickle.dumps(obj)) / 1024`` (``get_binary_object_size(obj, unit_size=1024)``
in the authors' torchdistill ``common/file_util.py``; ``convert2kb`` in head-network-distillation
``src/utils/net_measure_util.py`` also divides by 8 * 1024). Data rates: 1 Mbit/s = 1e6 bit/s.
"""

from __future__ import annotations

from typing import Any

PAPER = ("Matsubara et al., Head Network Distillation: Splitting Distilled Deep Neural Networks "
         "for Resource-Constrained Edge Computing Systems, IEEE Access 2020")
KB = 1024
"""Bytes per KB in the paper's Table 4 (see the module docstring)."""

MODEL_NAMES = {
    "mobilenet_v2": "MobileNet v2", "mnasnet0_5": "MnasNet 0.5x", "mnasnet1_0": "MnasNet 1.0x",
    "densenet169": "DenseNet-169", "densenet201": "DenseNet-201", "resnet152": "ResNet-152",
    "inception_v3": "Inception-v3",
}

TABLE1_SOURCE = f"{PAPER}, Table 1 (inference time of original models; Table 3: hardware)"

TABLE1_ACCURACY_PCT = {
    "mobilenet_v2": 71.87, "mnasnet0_5": 67.73, "mnasnet1_0": 73.45, "densenet169": 75.60,
    "densenet201": 76.89, "resnet152": 78.31, "inception_v3": 77.58,
}
"""Top-1 accuracy on the ILSVRC 2012 validation set (Table 1)."""

TABLE1_DEVICES: dict[str, dict[str, Any]] = {
    "rpi3b+": {
        "name": "Raspberry Pi 3B+",
        "hardware": "ARM Cortex-A53 quad-core 1.2 GHz, 1 GB RAM (Table 3)",
        "roles": ["md"],
        "full_s": {"mobilenet_v2": 1.348, "mnasnet0_5": 1.332, "mnasnet1_0": 2.332,
                   "densenet169": 7.752, "densenet201": 9.720, "resnet152": 19.64,
                   "inception_v3": 10.58},
    },
    "jetson-tx2": {
        "name": "Jetson TX2",
        "hardware": "ARM Cortex-A57 quad-core + Denver2 dual-core 2.0 GHz, 256-core Pascal GPU, "
                    "8 GB RAM (Table 3)",
        "roles": ["md", "es"],
        "full_s": {"mobilenet_v2": 0.112, "mnasnet0_5": 0.096, "mnasnet1_0": 0.096,
                   "densenet169": 0.332, "densenet201": 0.396, "resnet152": 0.308,
                   "inception_v3": 0.232},
    },
    "desktop-rtx2080ti": {
        "name": "Desktop (RTX 2080 Ti)",
        "hardware": "Intel i7-6700K quad-core 4.0 GHz, GeForce RTX 2080 Ti, 32 GB RAM (Table 3)",
        "roles": ["es"],
        "full_s": {"mobilenet_v2": 0.0049, "mnasnet0_5": 0.0047, "mnasnet1_0": 0.0047,
                   "densenet169": 0.02, "densenet201": 0.028, "resnet152": 0.016,
                   "inception_v3": 0.012},
    },
}

PAIRS = (("rpi3b+", "jetson-tx2"), ("rpi3b+", "desktop-rtx2080ti"), ("jetson-tx2", "desktop-rtx2080ti"))
"""The three MD-ES pairs of Section V-A (Figures 11-15)."""

TABLE4_SOURCE = (f"{PAPER}, Table 4 (average file sizes of the resized JPEG and of the quantized "
                 "bottleneck, N_ch = 12, pickled Python objects; KB = 1024 B)")
TABLE4_KB = {
    "densenet169": {"jpeg": 74.34, "bottleneck": 10.58},
    "densenet201": {"jpeg": 74.34, "bottleneck": 10.58},
    "resnet152": {"jpeg": 74.34, "bottleneck": 10.58},
    "inception_v3": {"jpeg": 100.1, "bottleneck": 16.77},
}
JPEG_224_KB = 74.34
"""The resized 224 px JPEG of Table 4, also what EC of the 224 px mobile models would send."""

TABLE5_SOURCE = (f"{PAPER}, Table 5 (DenseNet-201 over WiFi with 5 and 20 Mbit/s external UDP "
                 "load; ES: laptop i7-6700HQ + Quadro P500; the WiFi MD is not named, the LTE one "
                 "is an UP Board)")
TABLE5: dict[str, dict[str, Any]] = {
    # name: md_proc, es_proc (mean, std) and per load (Mbit/s): comm, total (mean, std)
    "md-only": {"md_proc": (1.520, 0.007), "es_proc": None,
                "loads": {5: {"comm": None, "total": (1.520, 0.007)},
                          20: {"comm": None, "total": (1.520, 0.007)}}},
    "es-only": {"md_proc": None, "es_proc": (0.034, 0.005),
                "loads": {5: {"comm": (0.091, 0.027), "total": (0.125, 0.032)},
                          20: {"comm": (0.25, 0.11), "total": (0.284, 0.115)}}},
    "org-split2": {"md_proc": (0.52, 0.005), "es_proc": (0.029, 0.001),
                   "loads": {5: {"comm": (0.096, 0.008), "total": (0.715, 0.014)},
                             20: {"comm": (0.27, 0.05), "total": (0.819, 0.056)}}},
    "mimic-split2": {"md_proc": (0.0856, 0.004), "es_proc": (0.0309, 0.002),
                     "loads": {5: {"comm": (0.0968, 0.008), "total": (0.2133, 0.014)},
                               20: {"comm": (0.3, 0.2), "total": (0.4165, 0.206)}}},
    "mimic-bottleneck": {"md_proc": (0.062, 0.003), "es_proc": (0.0225, 0.0005),
                         "loads": {5: {"comm": (0.008, 0.001), "total": (0.0925, 0.0045)},
                                   20: {"comm": (0.011, 0.0007), "total": (0.0955, 0.0042)}}},
}


def table5_shares(config: str = "mimic-bottleneck") -> tuple[float, float]:
    """(head share, tail share) of DenseNet-201 from Table 5's processing delays.

    Head share: the configuration's MD time over MD-only (the full model on that MD); tail
    share: its ES time over ES-only (the full model, JPEG decoding included, on that ES).
    """
    row = TABLE5[config]
    return row["md_proc"][0] / TABLE5["md-only"]["md_proc"][0], row["es_proc"][0] / TABLE5["es-only"]["es_proc"][0]


def as_json() -> dict[str, Any]:
    """Tables 1, 4 and 5 as one JSON-ready dict (the layout ``read_profile`` accepts)."""
    return {
        "kind": "paper-data",
        "source": PAPER,
        "table1": {"source": TABLE1_SOURCE, "accuracy_pct": TABLE1_ACCURACY_PCT,
                   "devices": TABLE1_DEVICES},
        "table4": {"source": TABLE4_SOURCE, "kb_bytes": KB, "kb": TABLE4_KB},
        "table5": {"source": TABLE5_SOURCE, "configs": TABLE5},
    }
