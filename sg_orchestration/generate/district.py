"""`generate_district`: every input of SPEC §3 for one synthetic district, plus the facts and the manifest."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from sg_orchestration.generate.campus import write_campus
from sg_orchestration.generate.common import Clock, Fault, Output, rng_for
from sg_orchestration.generate.oneroster import write_oneroster
from sg_orchestration.generate.population import (
    DISTRICT_NAME,
    EDFI_DISTRICT_NUMBER,
    QMLATIV_ENTITY_ID,
    Population,
)
from sg_orchestration.generate.powerschool import write_powerschool
from sg_orchestration.generate.qmlativ import write_qmlativ
from sg_orchestration.generate.roster import Roster
from sg_orchestration.generate.samegoal import cutover_dates, write_samegoal

MIN_STUDENTS = 50  # below this some cases cannot all be present at once
# Rows that cannot be parsed, each a broken copy of a real row of its file (SPEC §3: kept in raw with the
# reason and reported). Every kind appears at least once, spread over the systems.
FAULTS = (
    Fault("samegoal/special_education_enrollment.csv", "bad_bool", {"multiply_disabled": "maybe"}),
    Fault("samegoal/disability.csv", "bad_date", {"start_date": "2024-02-30"}),
    Fault("samegoal/dyslexia.csv", "blank_required_key", {"document_id": ""}),
    Fault("samegoal/child_find.csv", "bad_int", {"student_absences_within_timeframe": "three"}),
    Fault("qmlativ/students.csv", "bad_int", {"StudentID": "12O45"}),
    Fault("powerschool/students.csv", "bad_date", {"Birth Date": "13/45/2010"}),
    Fault("powerschool/students.csv", "too_many_fields"),
    Fault("powerschool/contacts.csv", "too_few_fields"),
    Fault("powerschool/enrollments.csv", "blank_required_key", {"Student Local Id": ""}),
    Fault("oneroster/demographics.csv", "bad_bool", {"white": "maybe"}),
    Fault("oneroster/enrollments.csv", "bad_date", {"beginDate": "2024-13-01"}),
    Fault("campus/calendars.csv", "bad_int", {"school_year": "2025-26"}),
    Fault("campus/enrollments.csv", "bad_bool", {"no_show": "maybe"}),
    Fault("campus/persons.csv", "too_few_fields"),
    Fault("campus/test_accommodations.csv", "bad_date", {"start_date": "13/45/2010"}),
    Fault("campus/test_accommodations.csv", "too_many_fields"),
)


def _placed_faults(seed: int) -> list[tuple[int, Fault]]:
    """Each fault goes before a clean row among the first forty of its file; two never share a place."""
    rng = rng_for(seed, "faults")
    placed = []
    for file in dict.fromkeys(f.file for f in FAULTS):
        faults = [f for f in FAULTS if f.file == file]
        rows = np.sort(rng.choice(np.arange(2, 40), size=len(faults), replace=False))
        placed += list(zip(rows.tolist(), faults, strict=True))
    return placed


def district_facts(pop: Population) -> dict:
    """What a districts.yaml entry for this district must say to agree with the generated files."""
    clock = pop.clock
    return {
        "id": "demo",
        "name": DISTRICT_NAME,
        "state": "TX",
        "timezone": "America/Chicago",
        "cutover_dates": {p: d.isoformat() if d else None for p, d in cutover_dates(clock).items()},
        "qmlativ_entity_id": QMLATIV_ENTITY_ID,
        "qmlativ_access_expires": (clock.as_of + timedelta(days=240)).isoformat(),
        "edfi_district_number": EDFI_DISTRICT_NUMBER,
        "school_years": [clock.year - 1, clock.year],
        "as_of": clock.as_of.isoformat(),
    }


def generate_district(out: Path, students: int, seed: int, as_of: date | None = None) -> dict:
    """Writes one synthetic district's inputs under `out`; returns the manifest (also `out/manifest.json`).

    The same (students, seed, as_of) always gives byte-identical files; `as_of` only moves dates.
    """
    if students < MIN_STUDENTS:
        raise ValueError(f"--students must be at least {MIN_STUDENTS}, so that every case is present")
    as_of = as_of or date.today()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pop = Population(students, seed, Clock(as_of))
    roster = Roster(pop, seed)
    output = Output(out, _placed_faults(seed))
    cases = write_samegoal(output, pop, seed)
    write_qmlativ(output, pop)
    cases |= write_powerschool(output, pop, roster, seed)
    cases |= write_oneroster(output, pop, roster, seed)
    cases |= write_campus(output, pop, seed)
    for kind in dict.fromkeys(f.kind for f in FAULTS):
        cases[f"malformed_{kind}"] = sum(1 for m in output.malformed if m["kind"] == kind)
    for kind in dict.fromkeys(q["kind"] for q in output.quirks):
        cases[f"quirk_{kind}"] = sum(1 for q in output.quirks if q["kind"] == kind)

    (out / "district.json").write_text(json.dumps(district_facts(pop), indent=2) + "\n", encoding="utf-8")
    manifest = {
        "seed": seed,
        "students": students,
        "as_of": as_of.isoformat(),
        "files": output.files,
        "cases": cases,
        "malformed": output.malformed,
        "quirks": output.quirks,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
