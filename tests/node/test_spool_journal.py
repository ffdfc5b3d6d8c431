"""The spool's journal under real faults: a process SIGKILLed after its acknowledgements.

Each test runs the spool in a child process (the real ``Spool`` class, the real disk) and
kills it with SIGKILL, the way a crash would; the parent then opens the spool again, as the
node does at start-up, and checks that every acknowledged instance is a file with exactly
the acknowledged bytes, and that nothing else appeared.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

from pydicom import dcmread

from medvision.node._journal_io import HEADER, MAGIC, aligned, generation_of, read_records
from medvision.node._spool import Spool
from tests.node.peers import REPO_ROOT, dcmtk

#: The child: stores instances and prints one JSON line per acknowledgement, as the SCP
#: would answer Success; `block` makes materialisation impossible first (the spool's
#: temporary folder replaced by a file), so acknowledged records stay only in the journal.
CHILD = textwrap.dedent(
    """
    import json, os, shutil, signal, sys
    from pathlib import Path
    from medvision.node._spool import Spool, SpoolError

    root, mode, start, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    spool = Spool(root)
    spool.start()
    assert spool.wait_journal(60), "no journal segment"
    if mode == "block":
        shutil.rmtree(spool.tmp)
        spool.tmp.write_bytes(b"not a folder")
    for i in range(start, start + count):
        data = os.urandom(1000 + i) + str(i).encode()
        try:
            stored = spool.store(data, "1.2.3", "1.2.3.4", f"1.2.3.4.{i}")
        except SpoolError as err:  # the SCP answers Out of Resources: not acknowledged
            print("refused", err, flush=True)
            continue
        print(json.dumps({"path": stored.relpath, "seq": stored.seq, "data": data.hex()}),
              flush=True)
    if mode == "stop":
        spool.stop()
        print("stopped", flush=True)
        sys.exit(0)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _child(root: Path, mode: str, start: int, count: int) -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), mode, str(start), str(count)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    if mode == "stop":
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _reopen(root: Path) -> Spool:
    """What the node does at start-up: open the spool (replays the journal)."""
    if root.joinpath(".incoming").is_file():
        root.joinpath(".incoming").unlink()
    spool = Spool(root)
    spool.discard_partial()
    return spool


def test_acknowledged_records_only_in_the_journal_survive_sigkill(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    acked = _child(root, "block", 0, 3)
    assert acked and acked[0]["seq"], acked  # the first went to the journal...
    journaled = [a for a in acked if a["seq"]]
    # ...and never reached its path before the kill (materialisation was impossible).
    assert not any((root / str(a["path"])).exists() for a in journaled)

    spool = _reopen(root)
    for a in acked:
        assert (root / str(a["path"])).read_bytes() == bytes.fromhex(str(a["data"]))
    assert len(spool.files()) == len(acked)
    assert list(spool.tmp.iterdir()) == []
    # Replayed once: the segment was recycled, a second start writes nothing again.
    assert not list(spool.journal_dir.glob("seg-*.wal"))


def test_a_file_cut_short_by_a_power_cut_is_written_again(tmp_path: Path) -> None:
    """A written-out file whose data never reached the disk (empty after a power cut)."""
    root = tmp_path / "spool"
    acked = _child(root, "block", 0, 1)
    path = root / str(acked[0]["path"])
    path.write_bytes(b"")  # renamed into place, data lost: what ext4 may leave
    _reopen(root)
    assert path.read_bytes() == bytes.fromhex(str(acked[0]["data"]))


def test_sigkill_right_after_acknowledgements(tmp_path: Path) -> None:
    """Killed with the materialiser mid-stream: every acknowledged file is whole."""
    root = tmp_path / "spool"
    acked = _child(root, "kill", 0, 40)
    assert len(acked) == 40 and all(a["seq"] for a in acked)
    spool = _reopen(root)
    for a in acked:
        assert (root / str(a["path"])).read_bytes() == bytes.fromhex(str(a["data"]))
    assert len(spool.files()) == 40


def test_a_recycled_segment_never_replays_its_stale_records(tmp_path: Path) -> None:
    """Records of a retired segment carry an old generation: never written out again."""
    root = tmp_path / "spool"
    first = _child(root, "stop", 0, 20)  # clean stop: materialised, segment recycled
    assert len(first) == 20 and all(a["seq"] for a in first)
    assert list((root / ".journal").glob("free-*.wal"))
    # A retention policy removes the old files; the recycled segment still holds them.
    for a in first:
        (root / str(a["path"])).unlink()

    second = _child(root, "block", 100, 1)  # reuses the free segment, then crashes
    assert second[0]["seq"]
    spool = _reopen(root)
    assert [p.name for p in spool.files()] == ["1.2.3.4.100.dcm"]
    assert (root / str(second[0]["path"])).read_bytes() == bytes.fromhex(str(second[0]["data"]))


def _segment_of(root: Path) -> Path:
    (segment,) = (root / ".journal").glob("seg-*.wal")
    return segment


def test_a_journal_written_before_the_upgrade_is_replayed(tmp_path: Path) -> None:
    """Records of the previous format (CRC-32 over the data, no digest) left by a node
    that crashed before it was upgraded are written out by the new one."""
    root = tmp_path / "spool"
    acked = _child(root, "block", 0, 3)
    segment = _segment_of(root)
    gen = generation_of(segment)
    records = read_records(segment, gen)
    assert len(records) == 3
    blob = bytearray(segment.stat().st_size)
    offset = 0
    for relpath, data in records:  # the same records as the old node wrote them
        path = relpath.encode()
        crc = zlib.crc32(data, zlib.crc32(path, zlib.crc32(struct.pack("<Q", gen))))
        record = HEADER.pack(MAGIC, gen, len(path), len(data), crc) + path + data
        blob[offset : offset + len(record)] = record
        offset = aligned(offset + len(record))
    segment.write_bytes(bytes(blob))

    spool = _reopen(root)
    for a in acked:
        assert (root / str(a["path"])).read_bytes() == bytes.fromhex(str(a["data"]))
    assert len(spool.files()) == 3


def test_a_record_whose_data_does_not_match_its_digest_is_not_written_out(
    tmp_path: Path,
) -> None:
    """A record's SHA-256 is checked at replay: a record whose data is not what was
    flushed (a write torn by a power cut) ends the replay there, no wrong file appears."""
    root = tmp_path / "spool"
    acked = _child(root, "block", 0, 3)
    segment = _segment_of(root)
    blob = bytearray(segment.read_bytes())
    last = bytes.fromhex(str(acked[-1]["data"]))
    at = bytes(blob).index(last)
    blob[at + len(last) // 2] ^= 0xFF
    segment.write_bytes(bytes(blob))

    spool = _reopen(root)
    for a in acked[:-1]:
        assert (root / str(a["path"])).read_bytes() == bytes.fromhex(str(a["data"]))
    assert not (root / str(acked[-1]["path"])).exists()
    assert len(spool.files()) == 2


def test_second_copy_while_in_the_journal_is_stored_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.start()
    try:
        assert spool.wait_journal(60)
        first = spool.store(b"first copy", "1.2.3", "1.2.3.4", "1.2.3.4.5")
        again = spool.store(b"second copy", "1.2.3", "1.2.3.4", "1.2.3.4.5")
        assert first.created and first.seq and not again.created
        assert spool.wait_materialised([first.seq], 30)
    finally:
        spool.stop()
    assert (tmp_path / "spool" / first.relpath).read_bytes() == b"first copy"
    assert len(spool.files()) == 1


def test_scp_acknowledges_through_the_journal(start_scp, chest_ct_dir: Path) -> None:  # noqa: ANN001
    """dcmtk's storescu into the SCP once a segment is ready: files and index as before."""
    scp = start_scp()
    assert scp.scp.spool.wait_journal(60)
    files = sorted(chest_ct_dir.glob("*.dcm"))[:6]
    result = dcmtk("storescu", "-aet", "PACS1", "-aec", "MEDVISION", "127.0.0.1", scp.port, *files)
    assert result.returncode == 0, result.stderr
    scp.flush()  # the index waits until the journal's records are files
    spool = scp.settings.spool_dir
    assert list(spool.glob("*/*/*.dcm")) and len(list(spool.glob("*/*/*.dcm"))) == 6
    for src in files:
        sent = dcmread(src)
        spooled = dcmread(
            spool
            / str(sent.StudyInstanceUID)
            / str(sent.SeriesInstanceUID)
            / f"{sent.SOPInstanceUID}.dcm"
        )
        assert spooled == sent
        assert spooled.file_meta.SourceApplicationEntityTitle.strip() == "PACS1"
    # They went through the journal: the live segment (not full yet) holds all six.
    records = [
        r
        for seg in (spool / ".journal").glob("seg-*.wal")
        for r in read_records(seg, generation_of(seg))
    ]
    assert len(records) == 6
