"""DICOM TLS: the SSL contexts of the SCP's TLS listener and of the sender, and why a
handshake failed, in words an operator can act on.

Both sides follow the Non-downgrading BCP 195 TLS Secure Transport Connection Profile
(PS3.15 B.11; dcmtk's default ``+py``): TLS 1.2 or later, never a fallback to an older
version, and for TLS 1.2 only the profile's four AES-GCM suites with forward secrecy
(:data:`BCP195_CIPHERS`; TLS 1.3 suites are all AEAD and are left as OpenSSL has them).
Certificates are mutual: the listener requires a client certificate that chains to
``dicom_tls_ca`` (a client without one is refused before it can send an A-ASSOCIATE-RQ), and
the sender presents its certificate and checks the PACS's against the destination's trust
store.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from medvision.config import ConfigError, Modality, Settings

#: TLS 1.2 cipher suites of the (Non-downgrading) BCP 195 profile, PS3.15 B.9 / B.11:
#: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
#: TLS_DHE_RSA_WITH_AES_128_GCM_SHA256 and TLS_DHE_RSA_WITH_AES_256_GCM_SHA384 (OpenSSL
#: names). All authenticate with RSA: certificates must have RSA keys.
BCP195_CIPHERS = ":".join(
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)
PROFILE = "Non-downgrading BCP 195 TLS Secure Transport Connection Profile (PS3.15 B.11)"


def _profile(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _load(context: ssl.SSLContext, what: str, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """Load our certificate and the trust store; a missing or unusable file is a usage
    error that names the setting (one line at start, never a traceback)."""
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"{what}: cannot load the certificate {cert} with the key {key}: {_detail(err)}"
        ) from None
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(
            f"{what}: cannot load the trusted certificates {ca}: {_detail(err)}"
        ) from None
    return context


def server_context(settings: Settings) -> ssl.SSLContext:
    """The TLS listener's context: our certificate, and callers must present one that
    chains to ``dicom_tls_ca``."""
    assert settings.dicom_tls_cert and settings.dicom_tls_key and settings.dicom_tls_ca
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.verify_mode = ssl.CERT_REQUIRED
    return _load(
        context,
        "dicom_tls_cert/dicom_tls_key/dicom_tls_ca",
        settings.dicom_tls_cert,
        settings.dicom_tls_key,
        settings.dicom_tls_ca,
    )


def client_context(settings: Settings, name: str, modality: Modality) -> ssl.SSLContext:
    """The sender's context for destination ``name``: the destination's own certificate,
    key and trust store where it gives them, else the node's ``dicom_tls_*``."""
    cert = modality.tls_cert or settings.dicom_tls_cert
    key = modality.tls_key or settings.dicom_tls_key
    ca = modality.tls_ca or settings.dicom_tls_ca
    assert cert and key and ca  # Settings checks this for every tls modality
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    context.check_hostname = modality.tls_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    return _load(context, f"modalities.{name} (tls)", cert, key, ca)


def _detail(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError):
        return str(err.reason or err.strerror or err)
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err)


#: OpenSSL reasons, as the ``reason`` of an :class:`ssl.SSLError`, in an operator's words.
_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer presented no certificate",
    "WRONG_VERSION_NUMBER": "the peer did not speak TLS (plain DICOM on the TLS port?)",
    "HTTP_REQUEST": "the peer did not speak TLS (an HTTP request)",
    "RECORD_LAYER_FAILURE": "the peer did not speak TLS",
    "UNSUPPORTED_PROTOCOL": "the peer offered only TLS versions below 1.2",
    "TLSV1_ALERT_PROTOCOL_VERSION": "the peer refused our TLS version (1.2 or later)",
    "NO_PROTOCOLS_AVAILABLE": "no TLS version in common (1.2 or later required)",
    "NO_SHARED_CIPHER": "no BCP 195 cipher suite in common (RSA certificates and AES-GCM)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer refused the handshake (no common cipher suite?)",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust our certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
    "TLSV1_ALERT_DECRYPT_ERROR": "the peer could not verify our certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a certificate from us",
}


def describe(err: BaseException) -> str:
    """Why a TLS handshake failed, for the log, the audit trail and the outbox."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"the peer's certificate is not trusted: {err.verify_message}"
    if isinstance(err, ssl.SSLError):
        reason = str(err.reason or "")
        return _REASONS.get(reason, reason.replace("_", " ").lower() or str(err))
    if isinstance(err, TimeoutError):
        return "no TLS handshake in time"
    return str(err) or type(err).__name__


def peer_subject(sock: object) -> str:
    """The subject of the certificate the peer presented on an established TLS socket
    (``CN=..., O=...``), or "" for a plain socket."""
    if not isinstance(sock, ssl.SSLSocket):
        return ""
    cert = sock.getpeercert() or {}
    parts = [f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    return ", ".join(parts)


__all__ = [
    "BCP195_CIPHERS",
    "PROFILE",
    "client_context",
    "describe",
    "peer_subject",
    "server_context",
]
