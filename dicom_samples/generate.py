"""``python -m dicom_samples.generate``, the command dicom_samples/README.md documents: the
generator is :mod:`medvision.synthetic.generate` (same options)."""

from __future__ import annotations

from medvision.synthetic.generate import generate_study, main

__all__ = ["generate_study", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
