"""A full disk, for real: a small tmpfs under the spool, the real SCP, a pynetdicom peer.

Every C-STORE answered Success must end up as a whole file once space returns; every
other answer must be Out of Resources (0xA700), and those instances are in neither the
spool nor the index. Needs permission to mount a tmpfs (root in a container); skipped
where that is refused.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import select

from medvision.audit import DbAuditLog
from medvision.config import Settings
from medvision.db import Database, Instance
from medvision.node import StorageSCP
from tests.node.peers import free_port

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    # Outside pytest's own temporary folders: other pytest sessions of the same user clean
    # old ones up, and must not walk into (or hold) this mount while it is in use.
    mnt = Path(tempfile.mkdtemp(prefix="medvision-small-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        mnt.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.25)
        else:  # still busy (someone else looking in): detach it, it goes when they are done
            subprocess.run(["umount", "-l", str(mnt)], check=True)
        mnt.rmdir()


def test_full_disk_answers_out_of_resources_and_keeps_every_success(
    small_disk: Path, tmp_path: Path, chest_ct_dir: Path
) -> None:
    settings = Settings(
        data_dir=small_disk / "data",
        database_url=f"sqlite:///{tmp_path / 'index.db'}",  # the index is not what fills up
        dicom_port=free_port(),
        bind_address="127.0.0.1",
        accept_unknown_calling_ae=True,  # no peers configured: let the test's SCU in
    )
    settings.data_dir.mkdir()
    db = Database(settings.db_url)
    db.create_schema()
    scp = StorageSCP(settings, db, DbAuditLog(db))
    scp.start()
    filler = small_disk / "filler"
    try:
        assert scp.spool.wait_journal(60)
        # Leave ~6 MB: a dozen instances fit, then the disk is full.
        with open(filler, "wb") as fh:
            fh.write(b"\0" * (48 - 32 - 6) * 1024 * 1024)
        datasets = [dcmread(p) for p in sorted(chest_ct_dir.glob("*.dcm"))[:30]]
        ae = AE(ae_title="PACS1")
        ae.add_requested_context(CT, datasets[0].file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title="MEDVISION")
        assert assoc.is_established
        statuses: dict[str, int] = {}
        try:
            for ds in datasets:
                statuses[str(ds.SOPInstanceUID)] = int(assoc.send_c_store(ds).Status)
        finally:
            assoc.release()
        ok = {uid for uid, status in statuses.items() if status == 0x0000}
        assert ok, statuses
        assert set(statuses.values()) == {0x0000, 0xA700}, statuses

        filler.unlink()  # space returns: what was acknowledged is written out
        assert scp.indexer.flush(60), "the index did not catch up"
    finally:
        scp.stop()
    spooled = {p.stem: p for p in settings.spool_dir.glob("*/*/*.dcm")}
    assert set(spooled) == ok
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        if uid in ok:
            assert dcmread(spooled[uid]).PixelData == ds.PixelData
    with db.session() as session:
        assert set(session.scalars(select(Instance.sop_instance_uid))) == ok
    assert list(settings.spool_dir.joinpath(".incoming").iterdir()) == []
    db.dispose()
