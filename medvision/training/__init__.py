"""Training of the project's own default CT models (``medvision train``, ``evaluate``).

See docs/accuracy.md. Importing this package imports neither torch nor MONAI.
"""

from medvision.training._cli import add_training_parsers

__all__ = ["add_training_parsers"]
