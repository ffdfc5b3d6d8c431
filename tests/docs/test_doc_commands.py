"""Every command in the operator and reader docs runs as written (issue 11, item 9).

The commands are read out of docs/pacs.md, node.md, reading.md and reviewing.md (see
``doc_commands``) and run by bash, in a folder that holds ``medvision.toml`` and the
repository's ``dicom_samples``, against a real ``medvision serve``, a real Orthanc and
dcmtk's own tools, with the bundled synthetic sample (``dicom_samples/chest-ct``). Only the
examples' host names, ports, identifiers and secrets are replaced (``Site.substitutions``
and the per-call ``subs``); a command that still names an example host or a ``<placeholder>``
after that fails. ``medvision`` on the PATH is a two-line script that runs this interpreter's
``python -m medvision``.

``test_every_doc_command_is_run_or_excused`` is the guard: a command that is added to those
docs (or changed) must be run by a test here, through ``Site.sh("<command as written>")``,
or be listed in ``NOT_RUN`` with the reason; excuses for commands that are gone fail too.

One node and one Orthanc serve the whole module (started once, stopped by PID at its end).
"""

from __future__ import annotations

import ast
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import medvision
from medvision.config import Settings
from tests.docs.doc_commands import DocCommand, extract, normalise
from tests.node.peers import REPO_ROOT, Orthanc, dcmtk, free_port, http_json, wait_for

DOCS_DIR = REPO_ROOT / "docs"
DOCS = ("pacs.md", "node.md", "reading.md", "reviewing.md")
SAMPLE = REPO_ROOT / "dicom_samples" / "chest-ct"
SAMPLE_FILES = 80

#: Commands of those docs that no test runs, and why. Keep this short: each entry is a
#: command a reader cannot try from the docs as they stand.
NOT_RUN: dict[str, str] = {
    "echoscu -aet MEDVISION -aec ORTHANC ...": (
        "an abbreviation, in the troubleshooting table, of the node -> PACS echo of step 3, "
        "which runs in full (test_echo_both_ways)"
    ),
    "medvision serve": (
        "node.md names the subcommand in its title and prose; the command lines that start "
        "the node are the fenced ones, which run"
    ),
    "medvision node MEDVISION listening on DICOM port 11112, "
    "HTTP on 127.0.0.1:8080 (local only), data in ...": (
        "serve's start-up line quoted in node.md's prose, not a command; tests/test_cli_config.py "
        "checks that serve prints that one line"
    ),
    "medvision audit verify": (
        "node.md names the subcommand in prose (checkpoints); its command line "
        "`medvision audit verify --config medvision.toml` runs (test_audit_verify)"
    ),
    "medvision status": "node.md names the subcommand in prose; the fenced forms run",
    "medvision run": (
        "node.md names the offline subcommand in prose; its command lines are in "
        "docs/results.md and tests/test_cli.py"
    ),
    "TCP_NODELAY=1 /usr/bin/echoscu -v +tls node.key node.pem +cf ca.pem -aet MEDVISION "
    "-aec ORTHANC pacs.example.org 4242": (
        "pacs.md step 6, node -> PACS over TLS: this module's Orthanc speaks plain DICOM (the "
        "other steps need it so); tests/node/test_tls.py runs Orthanc with step 6's DICOM TLS "
        "keys and the node's sender to it over TLS"
    ),
}


def doc_commands() -> list[DocCommand]:
    return [c for name in DOCS for c in extract(DOCS_DIR / name)]


def _run_in_tests() -> set[str]:
    """The string constants this module passes to ``.sh(...)`` or ``.start(...)``: the
    commands it runs (a command held in a variable would not count: write it out)."""
    tree = ast.parse(Path(__file__).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("sh", "start")
        ):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(normalise(arg.value))
    return found


def test_every_doc_command_is_run_or_excused() -> None:
    in_docs = {c.key for c in doc_commands()}
    run = _run_in_tests()
    assert in_docs, "no commands found in the docs: the extractor is broken"
    missing = sorted(in_docs - run - set(NOT_RUN))
    assert not missing, (
        "commands in the docs that no test runs (run them with Site.sh here, or say in "
        f"NOT_RUN why they cannot be): {missing}"
    )
    assert not run - in_docs, f"tests run commands the docs no longer have: {run - in_docs}"
    assert not set(NOT_RUN) - in_docs, f"stale NOT_RUN entries: {set(NOT_RUN) - in_docs}"
    assert not run & set(NOT_RUN), "a command is both run and excused"


def test_every_toml_block_is_a_valid_configuration() -> None:
    """The configuration examples use real setting names and values (unknown keys are
    refused by ``Settings``)."""
    blocks = 0
    for name in DOCS:
        for block in re.findall(r"```toml\n(.*?)```", (DOCS_DIR / name).read_text(), re.S):
            Settings(**tomllib.loads(block))
            blocks += 1
    assert blocks >= 3


# --- the site: a node and an Orthanc configured from the docs' own examples ------------------


def _replace(text: str, subs: Mapping[str, str], where: str) -> str:
    for old, new in subs.items():
        assert old in text, f"{where} no longer contains {old!r}: update the test's substitutions"
        text = text.replace(old, new)
    return text


def _fenced(doc: str, language: str, index: int = 0) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", (DOCS_DIR / doc).read_text(), re.S)
    return str(blocks[index])


@dataclass
class Site:
    """The reader's folder (``medvision.toml``, ``dicom_samples``), the node and Orthanc."""

    workdir: Path
    orthanc: Orthanc
    node_dicom_port: int
    node_http_port: int
    env: dict[str, str]
    #: The node's DICOM TLS port (pacs.md step 6), with step 6's certificates.
    node_tls_port: int = 0
    commands: set[str] = field(default_factory=lambda: {c.key for c in doc_commands()})
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def node_url(self) -> str:
        return f"http://127.0.0.1:{self.node_http_port}"

    @property
    def sample_uid(self) -> str:
        return str(json.loads((SAMPLE / "ground_truth.json").read_text())["study_instance_uid"])

    @property
    def substitutions(self) -> dict[str, str]:
        """Example values of the docs -> this site's (applied only where they occur)."""
        node = f"127.0.0.1 {self.node_dicom_port}"
        return {
            "http://pacs.example.org:8042": self.orthanc.url,
            "http://pacs:8042": self.orthanc.url,
            "pacs.example.org 4242": f"127.0.0.1 {self.orthanc.dicom_port}",
            "node.example.org 11112": node,
            '"Host": "node.example.org", "Port": 11112': (
                f'"Host": "127.0.0.1", "Port": {self.node_dicom_port}'
            ),
            "http://node.example.org:8080": self.node_url,
            "1.2.840.113619.2.55.3.2831164355.123": self.sample_uid,
            "<StudyInstanceUID>": self.sample_uid,
        }

    def _script(self, commands: tuple[str, ...], subs: Mapping[str, str]) -> str:
        for command in commands:
            assert normalise(command) in self.commands, f"not in the docs: {command!r}"
        script = "\n".join(commands)
        for old, new in {**self.substitutions, **subs}.items():
            script = script.replace(old, new)
        leftover = re.search(r"example\.org|<[A-Za-z-]+>|\.\.\.|\bNAME\b", script)
        assert leftover is None, f"an example value is left in {script!r}: {leftover}"
        return script

    def sh(
        self,
        *commands: str,
        subs: Mapping[str, str] | None = None,
        stdin: str | None = None,
        ok: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run doc commands, as written but for the examples' values, in one bash."""
        script = self._script(commands, subs or {})
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.workdir,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if ok:
            assert done.returncode == 0, f"{script}\nexit {done.returncode}\n{done.stderr}"
        return done

    def start(
        self,
        command: str,
        subs: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start a long-running doc command (``medvision serve``) in its own session."""
        script = self._script((command,), subs or {})
        cwd = cwd or self.workdir
        log = open(cwd / f"{len(self.processes)}.log", "ab")  # noqa: SIM115 - child's stdout
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        """SIGTERM the session we started (bash and the node it runs), by its id."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)

    def node_json(self, path: str, token: str) -> Any:
        return http_json(self.node_url + path, token=token)


def _environment(workdir: Path) -> dict[str, str]:
    """PATH with a ``medvision`` that runs this interpreter and this medvision; no
    MEDVISION_* setting from the caller; HOME inside the test's folder."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "medvision"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m medvision "$@"\n')
    shim.chmod(0o755)
    home = workdir / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVISION_")}
    package_parent = str(Path(medvision.__file__).resolve().parents[1])
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
        PYTHONPATH=os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")])),
        HOME=str(home),
        PYTHONUNBUFFERED="1",
    )
    return env


def _orthanc_from_docs(tmp: Path, node_dicom_port: int) -> Orthanc:
    """Orthanc with pacs.md's configuration block (the test adds only ports and folders)."""
    orthanc = Orthanc(tmp / "orthanc", {})
    config = json.loads((orthanc.dir / "orthanc.json").read_text())
    documented = json.loads(
        _replace(
            _fenced("pacs.md", "json"),
            {
                '"Host": "node.example.org", "Port": 11112': (
                    f'"Host": "127.0.0.1", "Port": {node_dicom_port}'
                )
            },
            "pacs.md's Orthanc configuration",
        )
    )
    documented["DicomPort"] = orthanc.dicom_port  # 4242 may be taken on this machine
    config.update(documented)
    (orthanc.dir / "orthanc.json").write_text(json.dumps(config, indent=2))
    return orthanc


def _node_config(
    site_dir: Path, orthanc: Orthanc, dicom_port: int, http_port: int, tls_port: int
) -> None:
    """pacs.md's ``medvision.toml``, on this site's ports, with a 1 s quiet period (only to
    be quick), the HTTP port and loopback binding in front, and a DICOM TLS listener with
    the certificates of pacs.md step 6 (made by its ``openssl`` commands, see ``site``)."""
    toml = _replace(
        _fenced("pacs.md", "toml"),
        {
            "dicom_port = 11112": f"dicom_port = {dicom_port}",
            '"10.0.0.5"': '"127.0.0.1"',
            "quiet_period_s = 10": "quiet_period_s = 1",
            'host = "pacs.example.org"': 'host = "127.0.0.1"',
            "port = 4242": f"port = {orthanc.dicom_port}",
        },
        "pacs.md's medvision.toml",
    )
    header = f'http_port = {http_port}\nbind_address = "127.0.0.1"\npoll_interval_s = 0.2\n'
    header += (
        f"dicom_tls_port = {tls_port}\n"
        'dicom_tls_cert = "node.pem"\ndicom_tls_key = "node.key"\ndicom_tls_ca = "ca.pem"\n'
    )
    (site_dir / "medvision.toml").write_text(header + toml)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("docs")
    workdir = tmp / "site"
    workdir.mkdir()
    (workdir / "dicom_samples").symlink_to(REPO_ROOT / "dicom_samples", target_is_directory=True)
    dicom_port, http_port, tls_port = free_port(), free_port(), free_port()
    orthanc = _orthanc_from_docs(tmp, dicom_port)
    _node_config(workdir, orthanc, dicom_port, http_port, tls_port)
    site = Site(workdir, orthanc, dicom_port, http_port, _environment(workdir), tls_port)
    _make_certificates(site)
    orthanc.start()
    try:
        node = site.start("medvision serve --config medvision.toml")
        wait_for(
            "the node's /health", lambda: _alive(node) and http_json(site.node_url + "/health")
        )
        yield site
    finally:
        for proc in site.processes:
            site.stop(proc)
        orthanc.stop()


def _make_certificates(site: Site) -> None:
    """pacs.md step 6: the CA, the node's and the PACS's keys and certificates, in the
    reader's folder, before the node (which reads them at start) is started."""
    names = {
        "DNS:node.example.org": "DNS:localhost,IP:127.0.0.1",
        "DNS:pacs.example.org": "DNS:localhost,IP:127.0.0.1",
    }
    site.sh(
        'openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=Hospital DICOM '
        'CA" -addext basicConstraints=critical,CA:TRUE -keyout ca.key -out ca.pem',
        'openssl req -newkey rsa:2048 -nodes -subj "/CN=MEDVISION" -keyout node.key -out node.csr',
        "openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days "
        "825 -extfile <(printf 'subjectAltName=DNS:node.example.org\\nextendedKeyUsage=serverAuth,"
        "clientAuth') -out node.pem",
        'openssl req -newkey rsa:2048 -nodes -subj "/CN=ORTHANC" -keyout pacs.key -out pacs.csr',
        "openssl x509 -req -in pacs.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days "
        "825 -extfile <(printf 'subjectAltName=DNS:pacs.example.org\\nextendedKeyUsage=serverAuth,"
        "clientAuth') -out pacs.pem",
        subs=names,
    )


def _alive(proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"a doc command exited with {proc.returncode}")
    return True


@pytest.fixture(scope="module")
def admin_token(site: Site) -> str:
    """pacs.md step 5: a user, then an API token for it."""
    site.sh("medvision users --config medvision.toml add NAME --role admin", subs={"NAME": "ops"})
    token = site.sh(
        "medvision users --config medvision.toml token NAME", subs={"NAME": "ops"}
    ).stdout.strip()
    assert token.startswith("mvt_"), token
    return token


@pytest.fixture(scope="module")
def pushed(site: Site, admin_token: str) -> str:
    """pacs.md step 4 on the sample: upload it to Orthanc, look it up, push it; the node
    analyses it and sends SEG and SR back. Returns Orthanc's id of the study."""
    site.sh(
        "for f in dicom_samples/chest-ct/*.dcm; do curl -s -X POST "
        'http://pacs.example.org:8042/instances --data-binary @"$f" > /dev/null; done'
    )
    found = json.loads(
        site.sh(
            "curl -X POST http://pacs.example.org:8042/tools/lookup "
            "-d '1.2.840.113619.2.55.3.2831164355.123'"
        ).stdout
    )
    orthanc_id = next(f["ID"] for f in found if f["Type"] == "Study")
    answer = json.loads(
        site.sh(
            "curl -X POST http://pacs.example.org:8042/modalities/medvision/store "
            """-d '{"Resources": ["0b7e4c1f-..."], "Synchronous": true}'""",
            subs={"0b7e4c1f-...": orthanc_id},
        ).stdout
    )
    assert answer["InstancesCount"] == SAMPLE_FILES and answer["FailedInstancesCount"] == 0
    assert (answer["LocalAet"], answer["RemoteAet"]) == ("ORTHANC", "MEDVISION")

    def sent() -> bool:
        try:
            study = site.node_json(f"/studies/{site.sample_uid}", admin_token)
        except urllib.error.HTTPError:
            return False
        assert study["state"] not in ("failed", "send-failed"), study
        return bool(study["state"] == "sent")

    wait_for("the sample's results to reach Orthanc", sent, timeout=180, interval=0.3)
    return orthanc_id


# --- pacs.md ----------------------------------------------------------------------------------


def test_echo_both_ways(site: Site) -> None:
    """pacs.md step 3: C-ECHO PACS -> node (through Orthanc) and node <-> PACS with dcmtk."""
    answer = site.sh("curl -X POST http://pacs.example.org:8042/modalities/medvision/echo -d '{}'")
    assert answer.stdout.strip() == "{}"
    to_pacs = site.sh(
        "TCP_NODELAY=1 /usr/bin/echoscu -v -aet MEDVISION -aec ORTHANC pacs.example.org 4242"
    )
    to_node = site.sh(
        "TCP_NODELAY=1 /usr/bin/echoscu -v -aet ORTHANC -aec MEDVISION node.example.org 11112"
    )
    for done in (to_pacs, to_node):
        assert "Received Echo Response (Success)" in done.stdout + done.stderr


def test_dicom_tls_echo_and_a_caller_without_a_certificate(site: Site) -> None:
    """pacs.md step 6: dcmtk with the PACS's certificate reaches the node's TLS port; without
    a certificate it is refused, and the node's log says why."""
    tls = {"node.example.org 2762": f"127.0.0.1 {site.node_tls_port}"}
    secured = site.sh(
        "TCP_NODELAY=1 /usr/bin/echoscu -v +tls pacs.key pacs.pem +cf ca.pem -aet ORTHANC "
        "-aec MEDVISION node.example.org 2762",
        subs=tls,
    )
    assert "Received Echo Response (Success)" in secured.stdout + secured.stderr
    refused = site.sh(
        "TCP_NODELAY=1 /usr/bin/echoscu -v +tla +cf ca.pem -aet ORTHANC -aec MEDVISION "
        "node.example.org 2762",
        subs=tls,
        ok=False,
    )
    assert refused.returncode != 0
    said = refused.stdout + refused.stderr
    assert "Peer aborted Association" in said or "Connection reset by peer" in said, said
    log = site.workdir / "0.log"  # the node's (site.start)
    wait_for(
        "the node's log line",
        lambda: "TLS handshake failed: the peer presented no certificate" in log.read_text(),
        10,
    )


def test_orthanc_learns_the_node_by_rest(site: Site) -> None:
    """pacs.md step 2: the modality entry without a restart, then the check."""
    site.sh(
        """curl -X PUT http://pacs.example.org:8042/modalities/medvision \\
     -d '{"AET": "MEDVISION", "Host": "node.example.org", "Port": 11112,
          "AllowEcho": true, "AllowStore": true}'"""
    )
    listed = json.loads(site.sh("curl http://pacs.example.org:8042/modalities?expand").stdout)
    entry = listed["medvision"]
    assert (entry["AET"], entry["Port"], entry["AllowStore"]) == (
        "MEDVISION",
        site.node_dicom_port,
        True,
    )


def test_push_from_orthanc_brings_seg_and_sr_back(
    site: Site, pushed: str, admin_token: str
) -> None:
    """pacs.md step 5: the node's state, its REST API, and the results in Orthanc by REST,
    DICOMweb and C-FIND."""
    status = site.sh("medvision status --config medvision.toml").stdout
    assert site.sample_uid in status and " sent " in status
    rows = json.loads(site.sh("medvision status --config medvision.toml --json").stdout)
    row = next(r for r in rows if r["study_instance_uid"] == site.sample_uid)
    assert row["state"] == "sent" and row["jobs"][0]["state"] == "done"

    study = json.loads(
        site.sh(
            "TOKEN=mvt_...",
            'curl -H "Authorization: Bearer $TOKEN" '
            "http://node.example.org:8080/studies/<StudyInstanceUID>",
            subs={"mvt_...": admin_token},
        ).stdout
    )
    assert study["state"] == "sent"
    assert {(d["ae_title"], d["state"]) for d in study["deliveries"]} == {("ORTHANC", "sent")}

    modalities = site.sh(
        "curl http://pacs.example.org:8042/studies/0b7e4c1f-.../series?expand "
        """| grep '"Modality"'""",
        subs={"0b7e4c1f-...": pushed},
    ).stdout
    assert sorted(re.findall(r'"Modality" : "(\w+)"', modalities)) == ["CT", "SEG", "SR"]

    seg = json.loads(
        site.sh(
            "curl 'http://pacs.example.org:8042/dicom-web/studies/<StudyInstanceUID>"
            "/series?Modality=SEG'"
        ).stdout
    )
    assert [s["00080060"]["Value"] for s in seg] == [["SEG"]]

    found = site.sh(
        "TCP_NODELAY=1 /usr/bin/findscu -S -aet MEDVISION -aec ORTHANC pacs.example.org 4242 \\\n"
        "    -k QueryRetrieveLevel=SERIES -k StudyInstanceUID=<StudyInstanceUID> "
        "-k Modality -k SeriesDescription"
    )
    found_modalities = re.findall(r"\(0008,0060\) CS \[(\w+) *\]", found.stdout + found.stderr)
    assert sorted(found_modalities) == ["CT", "SEG", "SR"]


def test_asynchronous_push_is_a_job_to_poll(site: Site, pushed: str) -> None:
    """pacs.md step 4: ``"Synchronous": false`` returns a job; the documented poll of it."""
    job = http_json(
        f"{site.orthanc.url}/modalities/medvision/store",
        {"Resources": [pushed], "Synchronous": False},
        method="POST",
    )

    def finished() -> dict[str, Any] | None:
        state = json.loads(
            site.sh("curl http://pacs.example.org:8042/jobs/<id>", subs={"<id>": job["ID"]}).stdout
        )
        assert state["State"] != "Failure", state
        return state if state["State"] == "Success" else None

    assert wait_for("Orthanc's push job", finished, timeout=120, interval=0.3)


def test_node_md_push_step(site: Site, pushed: str) -> None:
    """node.md "Setting up the PACS", step 3 (the same push, written shorter)."""
    answer = json.loads(
        site.sh(
            "curl -X POST http://pacs:8042/modalities/medvision/store "
            """-d '{"Resources": ["<orthanc-study-id>"], "Synchronous": true}'""",
            subs={"<orthanc-study-id>": pushed},
        ).stdout
    )
    # The study as Orthanc holds it now: the sample and the node's own SEG and SR, which the
    # node stores without analysing them again.
    assert answer["FailedInstancesCount"] == 0 and answer["InstancesCount"] >= SAMPLE_FILES


def test_storescu_sends_the_bundled_sample(site: Site) -> None:
    """pacs.md step 4 without Orthanc: every file of the JPEG 2000 sample is acknowledged,
    ``ground_truth.json`` is left alone."""
    done = site.sh(
        "TCP_NODELAY=1 /usr/bin/storescu -v -aet ORTHANC -aec MEDVISION -xv +sd +r "
        "+sp '*.dcm' node.example.org 11112 dicom_samples/chest-ct/"
    )
    log = done.stdout + done.stderr
    assert log.count("Received Store Response (Success)") == SAMPLE_FILES, log[-2000:]
    assert "ground_truth.json" not in log and "unable to convert" not in log


# --- node.md ----------------------------------------------------------------------------------


def test_settings_from_the_environment(site: Site) -> None:
    """node.md: the node started from environment variables alone (in a folder of its own,
    so that its ``./medvision-data`` is not the first node's). Its HTTP port and address
    come from the test's environment: 8080 may be taken on this machine."""
    folder = site.workdir / "env-node"
    folder.mkdir()
    port, http_port = free_port(), free_port()
    proc = site.start(
        "MEDVISION_DICOM_PORT=11113 \\\n"
        """MEDVISION_ALLOWED_CALLING_AETS='["ORTHANC"]' \\\n"""
        """MEDVISION_MODALITIES='{"pacs": {"ae_title": "ORTHANC", "host": "127.0.0.1", """
        """"port": 4242}}' \\\nmedvision serve""",
        subs={"11113": str(port), '"port": 4242': f'"port": {site.orthanc.dicom_port}'},
        cwd=folder,
        env={"MEDVISION_HTTP_PORT": str(http_port), "MEDVISION_BIND_ADDRESS": "127.0.0.1"},
    )
    try:
        url = f"http://127.0.0.1:{http_port}/health"
        wait_for("the second node's /health", lambda: _alive(proc) and http_json(url))
        assert (folder / "medvision-data" / "medvision.db").is_file()
        peer = ("-aec", "MEDVISION", "127.0.0.1", str(port))
        assert dcmtk("echoscu", "-aet", "ORTHANC", *peer).returncode == 0
        stranger = dcmtk("echoscu", "-aet", "STRANGER", *peer)
        assert stranger.returncode != 0  # the allow-list came through as a JSON list
    finally:
        site.stop(proc)


# --- reading.md and reviewing.md --------------------------------------------------------------


def _browser() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )


def _sign_in(site: Site, name: str, password: str) -> urllib.request.OpenerDirector:
    browser = _browser()
    form = urllib.parse.urlencode({"username": name, "password": password}).encode()
    with browser.open(site.node_url + "/login", data=form, timeout=60) as answer:
        assert json.loads(answer.read())["user"] == name
    return browser


def _status(browser: urllib.request.OpenerDirector, url: str) -> tuple[int, str]:
    try:
        with browser.open(url, timeout=120) as answer:
            return answer.status, answer.headers.get_content_type()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get_content_type()


def test_radiologist_and_qa_users_sign_in_and_see_their_pages(site: Site, pushed: str) -> None:
    """reading.md and reviewing.md: the administrator's commands make users who can sign in
    with the password typed on standard input, and each role sees the documented pages."""
    site.sh(
        "medvision users --config medvision.toml add NAME --role radiologist --password-stdin",
        subs={"NAME": "reader"},
        stdin="reader's secret\n",
    )
    site.sh(
        "medvision users --config medvision.toml add NAME --role qa --password-stdin",
        subs={"NAME": "auditor"},
        stdin="auditor's secret\n",
    )
    reader = _sign_in(site, "reader", "reader's secret")
    auditor = _sign_in(site, "auditor", "auditor's secret")
    uid = site.sample_uid
    base = site.node_url
    pages = {
        "/qa": "text/html",
        "/qa?since=2025-01-01&until=2025-01-31": "text/html",
        f"/qa/studies/{uid}/report.html": "text/html",
        f"/qa/studies/{uid}/report.pdf": "application/pdf",
        "/": "text/html",
        f"/viewer/{uid}": "text/html",
    }
    for page, kind in pages.items():
        assert _status(auditor, base + page) == (200, kind), page
    for page in ("/", f"/viewer/{uid}"):
        assert _status(reader, base + page)[0] == 200, page
    assert _status(reader, base + "/qa")[0] == 403  # "Not allowed" without the qa role


def test_audit_verify(site: Site, pushed: str) -> None:
    """reviewing.md: the node's hash chain checks out (exit 0, "intact")."""
    done = site.sh("medvision audit verify --config medvision.toml")
    assert "intact" in done.stdout


def test_node_md_config_commands(site: Site, pushed: str) -> None:
    """node.md: the node's data commands with a trailing --config act on the node's files."""
    site.sh(
        "medvision users add alice --role admin --password-stdin --config medvision.toml",
        stdin="a long enough passphrase\n",
    )
    listed = site.sh("medvision users list --config medvision.toml").stdout
    assert "alice" in listed and "admin" in listed
    current = site.sh("medvision db current --config medvision.toml")
    assert current.stdout.strip(), "db current printed no revision"
