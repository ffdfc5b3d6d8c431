"""Ingest rate of the node's SCP: dcmtk storescu (TCP_NODELAY=1) -> StorageSCP -> spool + index.

    python -m tests.node.bench_ingest [FOLDER] [--repeats N]

Each repeat stores the folder (default: the real 64-slice chest CT) into a fresh data
directory over one association, so every instance is really written (fsync + rename) and
indexed; the time runs from storescu's start until the index holds every instance.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database, Instance
from medvision.node import StorageSCP
from tests.conftest import shared_data_dir
from tests.node.peers import dcmtk, free_port


def once(folder: Path, n: int) -> float:
    with tempfile.TemporaryDirectory(prefix="medvision-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), dicom_port=free_port(), bind_address="127.0.0.1")
        db = Database(settings.db_url)
        db.create_schema()
        scp = StorageSCP(settings, db, DbAuditLog(db))
        scp.start()
        try:
            start = time.perf_counter()
            result = dcmtk(
                "storescu", "+sd", "-aet", "BENCH", "127.0.0.1", settings.dicom_port, folder
            )
            assert result.returncode == 0, result.stderr
            indexer = getattr(scp, "indexer", None)
            if indexer is not None:
                indexer.flush()
            elapsed = time.perf_counter() - start
            with db.session() as session:
                assert session.scalar(select(func.count()).select_from(Instance)) == n
        finally:
            scp.stop()
            db.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = shared_data_dir() / "ct" / "lung-pet-ct-dx-A0001" / "series-5mm"
    parser.add_argument("folder", type=Path, nargs="?", default=default)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    files = sorted(args.folder.glob("*.dcm"))
    mb = sum(f.stat().st_size for f in files) / 1e6
    rates = []
    for _ in range(args.repeats):
        elapsed = once(args.folder, len(files))
        rates.append(len(files) / elapsed)
        print(f"{len(files)} instances ({mb:.0f} MB) in {elapsed:.2f} s: {rates[-1]:.0f}/s")
    print(f"median {statistics.median(rates):.0f} instances/s, best {max(rates):.0f}/s")


if __name__ == "__main__":
    main()
