"""``medvision run`` exit codes and refusal reasons on real edge cases (issue 11, items 1-2).

0 when every pipeline that applies produced results; 1 when one that applies refused or
failed, or when none applies (each rule named); 2 when there is no DICOM. Pipelines made for
another modality never print an error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge_studies import EXPECTED, build_edge_studies, study_uid
from tests.test_cli import medvision


@pytest.fixture(scope="module")
def edge_studies(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_edge_studies(shared_data, tmp_path_factory.mktemp("edge"))


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_edge_case_is_refused_for_its_own_reason(
    case: str, edge_studies: dict[str, Path], tmp_path: Path
) -> None:
    reason, refused = EXPECTED[case]
    folder = edge_studies[case]
    result = medvision(
        "run", str(folder), "--out", str(tmp_path / "out"), "--quiet", models=tmp_path / "models"
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [error] = _errors(result.stderr)
    uid = study_uid(folder)
    if refused:
        assert error.startswith(f"error: study {uid}, lung-ct: refused: {reason}"), error
    else:
        assert error == f"error: study {uid}: no pipeline applies: {reason}", error


def test_mr_study_with_only_ct_pipelines_names_the_rule(shared_data: Path, tmp_path: Path) -> None:
    mr = shared_data / "mr/philips-3t-brain/classic-t1"
    result = medvision("run", str(mr), "--out", str(tmp_path / "out"), models=tmp_path / "m")
    assert result.returncode == 1
    [error] = _errors(result.stderr)
    assert error.endswith(
        "no pipeline applies: lung-ct does not apply: modality is MR, not CT (series 1301 (MR))"
    )
    assert not (tmp_path / "out").exists()  # nothing ran: no folder, no audit file
