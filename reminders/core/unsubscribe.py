"""Signed one-click unsubscribe links for email.

The token names the patient, not their address: the link ends up in access logs and mail
client histories, and must not carry the address itself. It is bound to the address all the
same, by a keyed digest of it: a patient's row purged after retention and its id given to
someone new (or an address changed) leaves an old link unsubscribing nobody.
"""

from __future__ import annotations

import hashlib
import hmac

from itsdangerous import BadSignature, URLSafeSerializer

SALT = "reminders.unsubscribe"


def _bound(secret_key: str, address: str) -> str:
    digest = hmac.new(secret_key.encode(), address.strip().lower().encode(), hashlib.sha256)
    return digest.hexdigest()[:16]


def token(secret_key: str, patient_id: int, address: str) -> str:
    payload = {"patient": patient_id, "to": _bound(secret_key, address)}
    return URLSafeSerializer(secret_key, salt=SALT).dumps(payload)


def patient_of(secret_key: str, value: str) -> tuple[int, str | None] | None:
    """The patient a link names, and the digest of the address it was sent to (None for a
    link from before links were bound)."""
    try:
        data = URLSafeSerializer(secret_key, salt=SALT).loads(value)
    except BadSignature:
        return None
    patient = data.get("patient") if isinstance(data, dict) else None
    if not isinstance(patient, int):
        return None
    bound = data.get("to")
    return patient, bound if isinstance(bound, str) else None


def sent_to(secret_key: str, bound: str | None, address: str) -> bool:
    """Whether a link bound to `bound` was sent to `address`. An unbound link (sent before
    links were bound) is taken as it is, so that links already in inboxes keep working."""
    return bound is None or hmac.compare_digest(bound, _bound(secret_key, address))


def link(public_url: str, secret_key: str, patient_id: int, address: str) -> str:
    return f"{public_url}/unsubscribe/{token(secret_key, patient_id, address)}"
