"""``medvision serve`` with imported brainchop bundles in a models folder of its own.

The real brainchop weights from the shared data are converted as docs/models.md tells a
user to (``import_brainchop``), into a temporary folder handed to the node process as
``MEDVISION_MODELS_DIR``: never the user's ``~/.cache/medvision/models``, and never this
test process's pipeline registry.
"""

from __future__ import annotations

from pathlib import Path

from medvision.pipelines.brainchop import import_brainchop
from tests.node.peers import NodeProcess

#: brainchop's small grey/white matter model (well under a minute on 2 CPU cores).
GWM = "brainchop-gwm-light"


def import_gwm(shared_data: Path, out: Path) -> Path:
    import_brainchop(shared_data / "models" / "brainchop", out, model="model5_gw_ae")
    return out


class ModelsNode(NodeProcess):
    """The node with ``models`` as its user models folder."""

    def __init__(self, data_dir: Path, models: Path, **settings: object) -> None:
        super().__init__(data_dir, **settings)
        self.models = models

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "MEDVISION_MODELS_DIR": str(self.models)}


__all__ = ["GWM", "ModelsNode", "import_gwm"]
