"""The built-in classical chest CT pipeline ``lung-ct``; importing this registers it."""

from medvision.pipelines._registry import register
from medvision.pipelines.lung_ct._params import LungParams
from medvision.pipelines.lung_ct._pipeline import LungCT

register("lung-ct", LungCT)

__all__ = ["LungCT", "LungParams"]
