"""The registry's answer to a name it does not know: a typed error that names what exists."""

from __future__ import annotations

import pytest

from medvision import pipelines
from medvision.errors import MedvisionError, UnknownPipeline


def test_unknown_name_is_a_typed_error_naming_the_available_pipelines() -> None:
    with pytest.raises(UnknownPipeline) as caught:
        pipelines.get("lung-cr")
    err = caught.value
    # A MedvisionError (a one-line reason for the user), not a KeyError that a caller could
    # confuse with a bug inside a pipeline.
    assert isinstance(err, MedvisionError) and not isinstance(err, KeyError)
    assert err.name == "lung-cr"
    assert "lung-ct" in err.available and err.available == pipelines.available()
    assert str(err).startswith("Unknown pipeline 'lung-cr'; available: ")
    assert "lung-ct" in str(err)


def test_a_removed_model_is_no_longer_a_pipeline(tmp_path, monkeypatch) -> None:
    """The model folders are read again at each listing: a model deleted under a running
    node is gone from it, instead of failing each study sent to it on a missing file."""
    import shutil

    from medvision.pipelines.nnunet import import_nnunet
    from tests.pipelines.nnunet.test_import import FIXTURE

    monkeypatch.setenv("MEDVISION_MODELS_DIR", str(tmp_path))
    folder = import_nnunet(FIXTURE, tmp_path, name="short-lived")
    assert "short-lived" in pipelines.available()
    assert pipelines.get("short-lived").name == "short-lived"
    shutil.rmtree(folder)
    assert "short-lived" not in pipelines.available()
    with pytest.raises(UnknownPipeline):
        pipelines.get("short-lived")
