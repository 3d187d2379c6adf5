"""Signed one-click unsubscribe links for email.

The token names the patient, not their address: the link ends up in access logs and mail
client histories, and must not carry the address itself.
"""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeSerializer

SALT = "reminders.unsubscribe"


def token(secret_key: str, patient_id: int) -> str:
    return URLSafeSerializer(secret_key, salt=SALT).dumps({"patient": patient_id})


def patient_of(secret_key: str, value: str) -> int | None:
    try:
        data = URLSafeSerializer(secret_key, salt=SALT).loads(value)
    except BadSignature:
        return None
    patient = data.get("patient") if isinstance(data, dict) else None
    return patient if isinstance(patient, int) else None


def link(public_url: str, secret_key: str, patient_id: int) -> str:
    return f"{public_url}/unsubscribe/{token(secret_key, patient_id)}"
