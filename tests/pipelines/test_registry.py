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
