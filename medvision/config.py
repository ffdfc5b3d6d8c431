"""One settings object for the node: defaults, then a TOML file, then the environment.

Every setting can be given in the config file (``medvision.toml``) or as an environment
variable ``MEDVISION_<SETTING>`` (e.g. ``MEDVISION_DICOM_PORT=11113``); the environment
wins, so that a container can override a baked-in file. Lists and tables are given in the
environment as JSON (``MEDVISION_ALLOWED_CALLING_AETS='["ORTHANC"]'``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def _check_networks(values: list[str]) -> list[str]:
    """Each an IP address or network (``10.0.0.5``, ``10.0.0.0/24``), so that a typo or a
    host name fails at start instead of silently never matching a caller."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return values


class Modality(BaseModel):
    """A DICOM peer we may send to (and, by default, the one that sent us a study)."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    #: Also send Secondary Capture overlays (findings burned in, "not verified" banner) and a
    #: Key Object Selection pointing at them, for viewers that cannot show DICOM SEG.
    overlays: bool = False
    #: Also send the planar SR (sr-planar.dcm): each lesion's long and short axis drawn on
    #: its key slice, which web viewers such as OHIF list as measurements.
    planar_sr: bool = False
    #: Source addresses this peer may call us from (IP addresses or networks such as
    #: ``10.0.0.0/24``); empty: its AE title is accepted from any address that
    #: ``allowed_hosts`` allows. ``host`` is where we send to, which need not be where it
    #: calls from (a PACS cluster, NAT).
    calling_hosts: list[str] = Field(default_factory=list)

    _hosts_ok = field_validator("calling_hosts")(_check_networks)
    #: Deliver results by STOW-RS to this DICOMweb URL (the studies endpoint, e.g.
    #: ``http://pacs:8042/dicom-web/studies``) instead of C-STORE; the AE title, host and
    #: port still name the destination in the outbox and the audit trail.
    stow_url: str = ""
    #: A destination for anything but the source PACS (research, model training): every
    #: result sent to it is de-identified first (PS3.15 Annex E; docs/deidentification.md).
    deidentify: bool = False
    #: DICOM TLS with this peer (docs/node.md "DICOM TLS"): results are sent to ``port`` over
    #: TLS (BCP 195 profile, our certificate presented, the peer's checked against
    #: ``tls_ca``); and where the node has a TLS listener (``dicom_tls_port``) its AE title
    #: is refused on the plain one, so that it can call us only with a certificate we trust.
    tls: bool = False
    #: PEM files for this peer; empty: the node's ``dicom_tls_ca`` / ``dicom_tls_cert`` /
    #: ``dicom_tls_key``. ``tls_ca`` holds the CA certificates (or the peer's own
    #: certificate) its server certificate must chain to.
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Also require the peer's certificate to name ``host`` (subjectAltName). Turn off only
    #: where ``tls_ca`` pins the peer's own certificate and it names no host.
    tls_check_hostname: bool = True

    @model_validator(mode="after")
    def _check_tls(self) -> Modality:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together (PEM file paths)")
        return self


class DeidSettings(BaseModel):
    """How data is de-identified for destinations marked ``deidentify`` and for
    ``medvision export`` (PS3.15 Annex E basic profile plus these options)."""

    #: File holding the site secret (at least 16 bytes) that keys patient pseudonyms and
    #: UID mapping: the same secret gives the same pseudonym for a patient in every study.
    secret_file: Path | None = None
    #: Retain Safe Private Option: keep the private attributes of PS3.15 Table E.3.10-1.
    retain_safe_private: bool = False
    #: Retain UIDs Option: keep UIDs; otherwise they are replaced by a keyed HMAC mapping.
    retain_uids: bool = False
    #: Clean Descriptors Option: keep descriptions (series, protocol...) cleaned of
    #: identifying values instead of removing them.
    clean_descriptors: bool = False

    def load_secret(self) -> bytes:
        """The site secret's bytes; a usage error if it is not configured or too short."""
        if self.secret_file is None:
            raise ConfigError("de-identification needs deid.secret_file (the site secret)")
        try:
            secret = self.secret_file.read_bytes().strip()
        except OSError as err:
            raise ConfigError(f"deid.secret_file {self.secret_file}: {err.strerror}") from None
        if len(secret) < 16:
            raise ConfigError(f"deid.secret_file {self.secret_file} holds under 16 bytes")
        return secret


class Settings(BaseSettings):
    """All node settings with the documented defaults."""

    model_config = SettingsConfigDict(env_prefix="MEDVISION_", extra="forbid")

    #: Our AE title, DICOM port and HTTP port.
    ae_title: str = "MEDVISION"
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    #: Where the DICOM listener listens (its callers are checked by AE title and address).
    bind_address: str = "0.0.0.0"
    #: DICOM TLS listener (docs/node.md "DICOM TLS"): a second port beside ``dicom_port``
    #: (IANA's dicom-tls port is 2762; 0 picks a free one), speaking the Non-downgrading
    #: BCP 195 profile (PS3.15 B.11, TLS 1.2 or later). Unset: no TLS listener. Needs
    #: ``dicom_tls_cert``, ``dicom_tls_key`` and ``dicom_tls_ca``.
    dicom_tls_port: int | None = Field(default=None, ge=0, le=65535)
    #: Only the TLS listener: ``dicom_port`` is not opened.
    dicom_tls_only: bool = False
    #: PEM files: the node's certificate (RSA key) and its private key, presented by the TLS
    #: listener and, by default, to ``tls`` destinations; and the CA certificates (or the
    #: peers' own certificates, concatenated) that a caller's certificate must chain to.
    #: A caller without such a certificate is refused in the handshake and audited.
    dicom_tls_cert: Path | None = None
    dicom_tls_key: Path | None = None
    dicom_tls_ca: Path | None = None
    #: Where the HTTP API and pages listen. Empty: ``bind_address`` when TLS is configured
    #: (``tls_cert``/``tls_key``), otherwise 127.0.0.1 only: plain HTTP carries passwords and
    #: tokens, so it leaves the host only when the operator says so here.
    http_bind_address: str = ""
    #: Where the spool, results and the SQLite database live.
    data_dir: Path = Path("medvision-data")
    #: SQLAlchemy URL; empty means SQLite inside ``data_dir``.
    database_url: str = ""
    #: This receiver's name among several sharing one PostgreSQL database and one
    #: ``data_dir`` (docs/scaling.md, "Several receivers on one database"): unique per
    #: ``medvision serve``, it names the receiver's journal and temporary folders in the
    #: spool, its row in ``receivers`` and its job claims. Empty: the only receiver of its
    #: database (no coordination with others).
    node_name: str = Field(default="", max_length=64, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")
    #: Calling AE titles allowed to associate besides those of ``modalities`` (peers that
    #: only send to us). Deny by default: a calling AE title in neither is rejected.
    allowed_calling_aets: list[str] = Field(default_factory=list)
    #: Accept associations from AE titles in neither ``modalities`` nor
    #: ``allowed_calling_aets`` (the only way a node with no peers configured accepts any).
    accept_unknown_calling_ae: bool = False
    #: Source IP addresses or networks allowed to associate, for every AE title (empty: any).
    allowed_hosts: list[str] = Field(default_factory=list)
    #: The Maximum Length the SCP offers (the longest P-DATA-TF it receives; 0: no limit).
    #: 128 KiB, dcmtk's largest: pynetdicom spends its Python per PDU, so a CT slice in
    #: 4 PDUs instead of 8 costs the receiver ~0.5 ms less (docs/benchmarks.md).
    max_pdu: int = Field(default=131072, ge=0)
    #: Associations of allowed AEs at a time; strangers and silent connections never take one.
    #: With several acceptor processes (``scp_processes``) the limit is for the node as a
    #: whole, not per process.
    max_associations: int = Field(default=10, ge=1)
    #: DICOM acceptor processes sharing ``dicom_port`` (docs/node.md, "Acceptor processes"):
    #: one listener hands each accepted connection to the least busy of them, each spools
    #: into its own journal and indexes into the same database. 0: one per CPU core the node
    #: may use (its CPU affinity, and a container's CPU quota); 1: the SCP runs inside the
    #: node's own process (no child processes). Each process takes ~115 MB of memory.
    scp_processes: int = Field(default=0, ge=0)
    #: ARTIM timer (PS3.8 9.1.5): a connection that has not sent an A-ASSOCIATE-RQ this many
    #: seconds after it opened is closed.
    artim_timeout_s: float = Field(default=10.0, gt=0)
    #: Connections from one address that are not (yet) an accepted association; more are
    #: closed at once. Accepted associations of allowed AEs do not count.
    max_connections_per_host: int = Field(default=8, ge=1)
    #: Connections not (yet) an accepted association, from all addresses together; when
    #: full, the one that has waited longest is closed to make room for the newcomer.
    max_pending_connections: int = Field(default=64, ge=1)
    #: A study is complete after this many seconds without a new instance.
    quiet_period_s: float = Field(default=10.0, gt=0)
    #: How many pipelines run at the same time.
    worker_concurrency: int = Field(default=1, ge=1)
    #: Pipelines to run for each complete study (empty: every registered pipeline).
    pipelines: list[str] = Field(default_factory=list)
    #: Known DICOM peers by name. Results go back to the peer whose AE title sent the study,
    #: unless ``destinations`` names others.
    modalities: dict[str, Modality] = Field(default_factory=dict)
    destinations: list[str] = Field(default_factory=list)
    #: De-identification for ``deidentify`` destinations and ``medvision export``.
    deid: DeidSettings = Field(default_factory=DeidSettings)
    #: Optional DICOMweb STOW-RS endpoint (e.g. http://pacs:8042/dicom-web) for results.
    stow_url: str = ""
    #: Sender retries: first retry after ``retry_initial_s``, doubling, capped.
    retry_initial_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=600.0, gt=0)
    max_send_attempts: int = Field(default=0, ge=0, description="0: retry forever")
    #: How often the background loops look for work.
    poll_interval_s: float = Field(default=0.5, gt=0)
    #: HTTPS for the API and web pages: both PEM paths set means uvicorn serves TLS.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: How long a browser session (``POST /login``) lasts.
    session_ttl_s: int = Field(default=12 * 3600, gt=0)
    #: Largest HTTP request body the API reads; a larger one is answered 413 before it is
    #: read (no route takes uploads: JSON and form fields only).
    http_max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: Password guessing (``POST /login`` and HTTP Basic): this many wrong passwords for one
    #: account, or from one address, within ``login_failure_window_s`` lock that account or
    #: address out of password checks for ``login_lockout_s`` (answered 429).
    login_max_failures_per_account: int = Field(default=5, ge=1)
    login_max_failures_per_host: int = Field(default=20, ge=1)
    login_failure_window_s: float = Field(default=300.0, gt=0)
    login_lockout_s: float = Field(default=300.0, gt=0)
    #: Serve ``/metrics`` without credentials (for a Prometheus on a trusted network).
    metrics_public: bool = False
    #: When a reviewer rejects a finding, send a new SR version marking it rejected.
    resend_sr_on_reject: bool = False
    #: Scale-out (docs/scaling.md). Empty: the embedded default, jobs run in this process's
    #: worker pool. An AMQP URL (``amqp://user:pass@rabbit:5672//``): jobs are published to
    #: RabbitMQ for Celery workers (``medvision worker``).
    broker_url: str = ""
    #: ``all``: every part in one process. ``receiver``: SCP, assembly, API and sender, no
    #: inference (needs ``broker_url``).
    role: Literal["all", "receiver"] = "all"
    #: A queued job not claimed this long after it was published is published again (the
    #: message may have been lost); duplicates are harmless, the claim is atomic.
    republish_after_s: float = Field(default=60.0, gt=0)
    #: Celery workers report to the ``workers`` table this often; a worker silent for
    #: ``worker_stale_s`` is taken for dead and its running job is queued again.
    worker_heartbeat_s: float = Field(default=5.0, gt=0)
    worker_stale_s: float = Field(default=60.0, gt=0)
    #: ``medvision worker`` serves Prometheus metrics on this port (0: off). One port per
    #: worker process: two workers on one host need two values (a port in use is logged
    #: and the worker runs on without metrics).
    worker_metrics_port: int = Field(default=9811, ge=0, le=65535)
    #: Audit checkpoints (docs/audit.md): the signed head of the chain is appended to this
    #: file every ``audit_anchor_interval_s`` (0: only at stop) and when the node stops.
    #: Empty paths mean ``DATA_DIR/audit-anchors.jsonl`` and ``DATA_DIR/audit-anchor.key``
    #: (the HMAC key, made with mode 0600 at first start if absent). Put the anchor file on
    #: another disk or host mount than the database where you can.
    audit_anchor_file: Path | None = None
    audit_key_file: Path | None = None
    audit_anchor_interval_s: float = Field(default=60.0, ge=0)

    _hosts_ok = field_validator("allowed_hosts")(_check_networks)

    @field_validator("ae_title")
    @classmethod
    def _check_aet(cls, value: str) -> str:
        if not 0 < len(value) <= 16 or "\\" in value:
            raise ValueError(f"AE title must be 1-16 characters without '\\', got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together (PEM file paths)")
        return self

    @model_validator(mode="after")
    def _check_dicom_tls(self) -> Settings:
        if (self.dicom_tls_cert is None) != (self.dicom_tls_key is None):
            raise ValueError("dicom_tls_cert and dicom_tls_key must be given together")
        if self.dicom_tls_port is not None and not (self.dicom_tls_cert and self.dicom_tls_ca):
            raise ValueError(
                "dicom_tls_port needs dicom_tls_cert, dicom_tls_key and dicom_tls_ca "
                "(callers must present a certificate that chains to dicom_tls_ca)"
            )
        if self.dicom_tls_only and self.dicom_tls_port is None:
            raise ValueError("dicom_tls_only needs dicom_tls_port")
        for name, m in sorted(self.modalities.items()):
            if not m.tls:
                continue
            if not (m.tls_cert or self.dicom_tls_cert):
                raise ValueError(
                    f"modalities.{name} has tls: set its tls_cert/tls_key or dicom_tls_cert/"
                    "dicom_tls_key (our certificate, which it must trust)"
                )
            if not (m.tls_ca or self.dicom_tls_ca):
                raise ValueError(
                    f"modalities.{name} has tls: set its tls_ca or dicom_tls_ca (what its "
                    "certificate must chain to)"
                )
        return self

    @model_validator(mode="after")
    def _check_deid(self) -> Settings:
        marked = sorted(name for name, m in self.modalities.items() if m.deidentify)
        if marked and self.deid.secret_file is None:
            raise ValueError(
                f"modalities {', '.join(marked)} are marked deidentify: set deid.secret_file"
            )
        return self

    @model_validator(mode="after")
    def _check_role(self) -> Settings:
        if self.role == "receiver" and not self.broker_url:
            raise ValueError("role 'receiver' needs broker_url (jobs are run by Celery workers)")
        return self

    @property
    def acceptor_count(self) -> int:
        """How many acceptor processes ``scp_processes`` asks for (0: the usable cores)."""
        return self.scp_processes or usable_cores()

    @property
    def receiver_name(self) -> str:
        """``node_name``, or the host's name for the only receiver of a database."""
        return self.node_name or socket.gethostname()

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'medvision.db').resolve()}"

    @property
    def anchor_file(self) -> Path:
        return self.audit_anchor_file or self.data_dir / "audit-anchors.jsonl"

    @property
    def anchor_key_file(self) -> Path:
        return self.audit_key_file or self.data_dir / "audit-anchor.key"

    @property
    def http_host(self) -> str:
        """The address the HTTP API listens on (see ``http_bind_address``)."""
        if self.http_bind_address:
            return self.http_bind_address
        return self.bind_address if self.tls_cert else "127.0.0.1"

    def modality_for_aet(self, ae_title: str) -> Modality | None:
        return next((m for m in self.modalities.values() if m.ae_title == ae_title), None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, so it overrides what the file (passed as init kwargs) says.
        return (env_settings, init_settings)


def usable_cores() -> int:
    """The CPU cores this process may use: its affinity, and within a container the CPU
    quota of its cgroup (``cpu.max``, cgroup v2), which affinity does not show."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, -(-int(quota) // int(period)))  # rounded up
    except (OSError, ValueError):
        pass
    return max(1, cores)


class ConfigError(ValueError):
    """The config file or a ``MEDVISION_*`` variable is missing or wrong: a usage error
    that every command prints as one line, never a traceback."""


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``path`` (TOML, optional) and the environment; ``overrides`` win."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
        except OSError as err:
            raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from None
    try:
        settings = Settings(**values)
    except ValidationError as err:
        where = f"config file {path} or MEDVISION_* variables" if path else "MEDVISION_* variables"
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"invalid settings ({where}): {problems}") from None
    if overrides:
        settings = settings.model_copy(update=overrides)
    return settings


__all__ = ["ConfigError", "DeidSettings", "Modality", "Settings", "load_settings"]
