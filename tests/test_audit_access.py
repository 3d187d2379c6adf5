"""Who looked at a patient: opening a patient page, a search (by a keyed digest, never its
words) and a download are in the audit log, which administrators filter and export."""

from __future__ import annotations

import csv
import io
import json

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker
from staff import ALICE, BOB, Staff
from test_leaks import _refused_run
from test_pages import enrol


def test_views_searches_and_downloads_are_audited_and_admins_can_find_and_export_them(
    app: FastAPI, alice: Staff, factory: sessionmaker[Session]
) -> None:
    enrolment_id = enrol(alice)
    alice.get(f"/enrolments/{enrolment_id}")
    alice.post("/search", {"q": "Megan Price"}, page="/search")
    run_id = _refused_run(factory, {"booking_ref": "BK-1", "name": "Ceri Evans"})
    alice.get(f"/import/{run_id}/errors.csv")
    bob = Staff(app)
    assert bob.login(BOB).status_code == 303

    viewed = bob.get(f"/audit?actor={ALICE}&action=view&enrolment={enrolment_id}").text
    assert f'href="/enrolments/{enrolment_id}"' in viewed and "view" in viewed
    export = bob.get(f"/audit.csv?actor={ALICE}")
    assert export.headers["cache-control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(export.text)))
    actions = [row["action"] for row in rows]
    assert {"view", "search", "download", "enrol"} <= set(actions)
    assert {row["actor"] for row in rows} == {ALICE}
    search = next(row for row in rows if row["action"] == "search")
    detail = json.loads(search["detail"])
    assert detail["found"] == 1 and len(detail["query"]) == 32
    assert "Megan" not in export.text and "Price" not in export.text  # the words are not kept
    only_views = list(csv.DictReader(io.StringIO(bob.get("/audit.csv?action=view").text)))
    assert [row["action"] for row in only_views] == ["view"]
    # The export itself is on the record.
    assert "audit-export" in bob.get(f"/audit?actor={BOB}").text
    assert alice.get("/audit.csv").status_code == 403


def test_the_patient_page_history_is_not_filled_with_views(alice: Staff) -> None:
    enrolment_id = enrol(alice)
    for _ in range(3):
        page = alice.get(f"/enrolments/{enrolment_id}").text
    assert ">view<" not in page
