"""The JSON API for booking systems (PRODUCT.md, Contracts, HTTP), behind bearer tokens."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1")
