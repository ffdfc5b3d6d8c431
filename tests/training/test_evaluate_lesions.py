"""``medvision evaluate lesions`` on real chest CTs with expert marks.

The classical ``lung-ct`` on LIDC-IDRI-0001 (133 slices, ~15-25 s on the shared 2-core
machine) end to end through the command; the hand-checked scoring rules are in
``test_lesion_score.py``. The full three-patient table is in docs/accuracy.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvision.cli import main
from medvision.training._lesion_cases import get_case, load_reference, load_volume


def test_lidc_reference_is_the_readers_nodule() -> None:
    """LIDC-IDRI-0001: one nodule of ~24 mm outlined by all 4 readers, at the slice and
    position the readers' XML gives (annotations.json centroid ~(316, 367, 90) in x, y, z)."""
    case = get_case("lidc-idri-0001")
    volume = load_volume(case)
    ref = load_reference(case, volume)
    (nodule,) = ref.nodules
    assert nodule.readers == 4 and nodule.is_target
    assert 23.0 <= nodule.diameter_mm <= 26.0
    k, j, i = (c.mean() for c in (nodule.reader_count >= 3).nonzero())
    assert abs(k - 89.7) < 2 and abs(j - 367) < 3 and abs(i - 316) < 3
    assert len(ref.points) >= 4  # readers' sub-3 mm and non-nodule marks


def test_a0001_reference_has_the_eleven_boxed_slices() -> None:
    case = get_case("A0001")
    ref = load_reference(case, load_volume(case))
    assert len(ref.boxes) == 11


@pytest.mark.slow
def test_evaluate_classical_pipeline_on_lidc(tmp_path: Path, capsys) -> None:
    out = tmp_path / "lesions.json"
    args = ["evaluate", "lesions", "--pipeline", "lung-ct", "--case", "LIDC-IDRI-0001"]
    assert main([*args, "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    (row,) = figures["cases"]
    assert figures["pipeline"] == "lung-ct"
    assert (row["case"], row["targets"], row["hits"]) == ("LIDC-IDRI-0001", 1, 1)
    assert row["findings"] == len(row["findings_detail"]) == row["false_positives"] + 1
    assert row["most_findings_on_one_tumour"] == 1
    assert row["dice"] > 0.5  # measured 0.82
    hit = [f for f in row["findings_detail"] if f["outcome"] == "hit"]
    assert len(hit) == 1 and 70 <= hit[0]["slice"] <= 110
    line = next(x for x in printed.splitlines() if x.startswith("LIDC-IDRI-0001"))
    assert "1/1 nodules" in line and f"{row['dice']:.2f}" in line


def test_evaluate_refuses_unknown_case(capsys) -> None:
    assert main(["evaluate", "lesions", "--case", "LIDC-IDRI-9999"]) == 2
    assert "Unknown case" in capsys.readouterr().err


def test_evaluate_a_filter_bundle_that_is_not_installed(tmp_path: Path, capsys) -> None:
    """``--bundle`` with a lesion filter bundle measures lung-ct with *that* filter: one
    whose threshold no score reaches keeps no lesion, where the installed one hits all 11
    boxed slices of A0001."""
    from dataclasses import replace

    from medvision.pipelines.lung_ct._filter import build_network
    from medvision.training._lesion_bundle import write_filter_bundle
    from medvision.training._lesion_filter_train import FilterHP

    bundle = write_filter_bundle(
        build_network(), tmp_path / "f", replace(FilterHP(), threshold=1.01), None
    )
    out = tmp_path / "figures.json"
    args = ["evaluate", "lesions", "--bundle", str(bundle), "--case", "A0001"]
    assert main([*args, "--json-out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["cases"]
    assert (row["findings"], row["hits"], row["targets"]) == (0, 0, 11)
    assert "lung-ct" in capsys.readouterr().out
    import os

    assert os.environ.get("MEDVISION_LESION_FILTER") != str(bundle.resolve())  # restored
