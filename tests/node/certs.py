"""Test certificates for DICOM TLS, made with the openssl command-line tool.

A test CA signs the node's and the peers' certificates (RSA, as the BCP 195 cipher suites
need; subjectAltName localhost and 127.0.0.1, for server and client use). A second,
unrelated CA signs the "rogue" certificate: a well-formed certificate that nobody trusts.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
"""


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    #: The CA every trusted certificate chains to (``dicom_tls_ca``, Orthanc's trust file).
    ca: Path
    node: Pair
    pacs: Pair
    #: Signed by another CA that no one trusts.
    rogue: Pair
    rogue_ca: Path


def _openssl(*args: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _ca(folder: Path, name: str) -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        "-keyout", pair.key, "-out", pair.cert, "-subj", f"/O=medvision tests/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def _leaf(folder: Path, name: str, ca: Pair) -> Pair:
    pair = Pair(folder / f"{name}.pem", folder / f"{name}.key")
    csr, ext = folder / f"{name}.csr", folder / f"{name}.ext"
    ext.write_text(EXTENSIONS)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", pair.key, "-out", csr,
        "-subj", f"/O=medvision tests/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
        "-sha256", "-days", "2", "-extfile", ext, "-out", pair.cert,
    )  # fmt: skip
    return pair


def make_certs(folder: Path) -> Certs:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _ca(folder, "test-ca")
    rogue_ca = _ca(folder, "rogue-ca")
    return Certs(
        ca=ca.cert,
        node=_leaf(folder, "MEDVISION", ca),
        pacs=_leaf(folder, "PACS", ca),
        rogue=_leaf(folder, "ROGUE", rogue_ca),
        rogue_ca=rogue_ca.cert,
    )


__all__ = ["Certs", "Pair", "make_certs"]
