"""A destination marked ``deidentify`` needs the site secret: refused at load, never sent
in the clear."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvision.config import ConfigError, load_settings
from medvision.deid import Deidentifier

RESEARCH = '[modalities.research]\nae_title = "R"\nhost = "127.0.0.1"\nport = 104\n'


def test_deidentify_without_secret_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "medvision.toml"
    config.write_text(RESEARCH + "deidentify = true\n")
    with pytest.raises(ConfigError, match="research.*deid.secret_file"):
        load_settings(config)


def test_short_or_missing_secret_file_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "medvision.toml"
    key = tmp_path / "deid.key"
    config.write_text(f'{RESEARCH}deidentify = true\n[deid]\nsecret_file = "{key}"\n')
    settings = load_settings(config)
    with pytest.raises(ConfigError, match="No such file"):
        Deidentifier.from_settings(settings)
    key.write_bytes(b"too short")
    with pytest.raises(ConfigError, match="under 16 bytes"):
        Deidentifier.from_settings(settings)
    key.write_bytes(b"a long enough site secret\n")
    assert Deidentifier.from_settings(settings).secret == b"a long enough site secret"
