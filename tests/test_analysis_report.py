"""Figures, the HTML report, `testbed report` and `testbed profile`, on stored result folders.

The report of the two fixtures (a sweep and a loopback demo, side by side) is written once per
module; the tests then check its files. Rendering in headless Chromium runs only where a
chromium binary is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analysis.figures import FIGURES
from analysis.report import default_out, write_report
from testbed.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "analysis"
SWEEP = FIXTURES / "sweep"
LOOPBACK = FIXTURES / "loopback"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ANALYTIC = ("analytic_fig2_edge_vs_local", "analytic_totals_vs_rate", "analytic_fig11_gain_lc",
            "analytic_fig12_gain_ec", "analytic_fig13_gain_mobilenet")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return write_report([SWEEP, LOOPBACK], out)


def test_every_figure_file_is_written_and_not_empty(report):
    expected = {f"{name}-{run}" for name in FIGURES for run in ("sweep", "loopback")}
    expected |= {"compare_total_vs_load", *ANALYTIC}
    assert set(report.figures) == expected
    for name, paths in report.figures.items():
        assert {p.suffix for p in paths} == {".png", ".pdf"}, name
        for p in paths:
            data = p.read_bytes()
            assert len(data) > 5_000, p
            assert data.startswith(PNG_MAGIC if p.suffix == ".png" else b"%PDF"), p


def test_report_is_self_contained_with_tables_and_conditions(report):
    html = report.html.read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    embedded = [n for n in report.figures]  # every figure appears once in the report
    assert len(images) == len(embedded)
    assert not re.search(r'<img src="(?!data:)', html) and "<script" not in html
    assert "http://" not in html and "https://" not in html
    for text in ("Table 5: delay components", "Runs side by side", "NOT applied",
                 "no sch_netem", "cfs_quota_us=50000", "Loads: asked and achieved",
                 "L10-r0-es-only", "Crossing points", "scaled", "Weights", "torch",
                 "pooled over all competing loads", "p99&lt;100"):
        assert text in html, text
    assert (report.html.parent / "tables" / "table5-sweep.tex").exists()
    assert (report.html.parent / "figures" / "compare_total_vs_load.pdf").exists()


def test_default_output_folder():
    assert default_out([SWEEP]) == SWEEP / "report"
    assert default_out([SWEEP, LOOPBACK]).name == "compare-sweep-vs-loopback"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary installed (apt-get install "
                    "chromium) to render the HTML report headless")
def test_report_renders_its_figures_in_headless_chromium(report, tmp_path):
    check = """<script>window.addEventListener('load',()=>{const im=[...document.images];
    const ok=im.filter(i=>i.complete&&i.naturalWidth>0&&i.getBoundingClientRect().width>0);
    document.body.setAttribute('data-images',im.length);
    document.body.setAttribute('data-images-ok',ok.length);});</script>"""
    page = tmp_path / "check.html"  # a copy with a probe: the report itself carries no script
    page.write_text(report.html.read_text().replace("</body>", check + "</body>"))
    out = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", out.stdout)
    assert body, out.stderr[-2000:]
    total = int(re.search(r'data-images="(\d+)"', body.group(0)).group(1))
    ok = int(re.search(r'data-images-ok="(\d+)"', body.group(0)).group(1))
    assert total == len(report.figures) and ok == total


# ---------------------------------------------------------------------- command line


def test_cli_report_and_clear_error(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", str(SWEEP), "--out", str(out), "--no-analytic", "--loads", "10"]) == 0
    assert (out / "report.html").stat().st_size > 10_000
    assert "report:" in capsys.readouterr().out
    # one run: figure names carry no run suffix; --no-analytic leaves the analytic ones out
    assert {p.name for p in (out / "figures").iterdir()} == {
        f"{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")}
    broken = tmp_path / "broken"
    shutil.copytree(SWEEP, broken)
    (broken / "frames.csv").unlink()
    assert main(["report", str(broken), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "frames.csv is missing" in err and "Traceback" not in err


def test_cli_profile_times_parts_and_writes_a_readable_profile(tmp_path, capsys):
    from analysis.profiles import read_profile
    from testbed.profile import configurations

    assert [c.name for c in configurations("mobilenet_v2")] == ["md-only", "es-only", "org-split2"]
    assert len(configurations("densenet201")) == 5
    out = tmp_path / "profile.json"
    assert main(["profile", "--models", "mobilenet_v2", "--configs", "md-only", "es-only",
                 "--frames", "1", "--warmup", "0", "--out", str(out)]) == 0
    prof = read_profile(out)
    assert prof.measured and prof.full("mobilenet_v2") > 0
    es_only = prof.parts["mobilenet_v2"]["es-only"]
    assert es_only.es_s > 0 and es_only.wire_bytes > es_only.payload_bytes > 0
    assert "mobilenet_v2" in capsys.readouterr().out
    assert main(["profile", "--models", "nosuchnet", "--out", str(out)]) == 2
