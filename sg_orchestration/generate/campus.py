"""SIS extracts for the Ed-Fi Student Education Organization Assessment Accommodations resource
(SPEC §3.4, seed 002): schools, calendars, school years, persons, enrollments and test accommodations."""

from __future__ import annotations

import random
from datetime import date

import numpy as np

from sg_orchestration.generate.common import (
    Output,
    at_least,
    flag,
    rng_for,
    spread,
    strs,
    texts,
    write_blocks,
)
from sg_orchestration.generate.population import DISABILITIES, Population

# State test names as a SIS holds them; the Ed-Fi mapping keys on the words ILEARN, I AM, ISTAR, IREAD, WIDA.
ILEARN_3_8, ILEARN_BIOLOGY, ILEARN_GOVERNMENT = "ILEARN Grade 3-8", "ILEARN Biology", "ILEARN U.S. Government"
IREAD_3, I_AM, ISTAR, WIDA = "IREAD-3", "I AM", "ISTAR", "WIDA ACCESS"
UNMAPPED_TESTS = ("SAT", "NWEA MAP", "PSAT 8/9")  # map to no state test: error-log rows, never sent
# Accommodation codes (seed 002's Accommodation Descriptors) the generator treats as valid for each test.
# The district's valid-combinations seed must hold at least these pairs.
VALID_ACCOMMODATIONS = {
    ILEARN_3_8: (
        "ET",
        "AB",
        "HR_XRD",
        "TTS_XRD",
        "SCR",
        "IT",
        "PB",
        "LPP",
        "CAL_HH_ALL",
        "SGL",
        "ST",
        "E_STT",
    ),
    ILEARN_BIOLOGY: ("ET", "AB", "HR_XRD", "TTS_XRD", "SCR", "IT", "PB", "LPP", "SGL", "ST"),
    ILEARN_GOVERNMENT: ("ET", "AB", "HR_XRD", "TTS_XRD", "SCR", "IT", "PB", "LPP", "SGL", "ST"),
    IREAD_3: ("ET", "AB", "HR_XRD", "TTS_XRD", "SCR", "IT", "PB", "LPP"),
    I_AM: ("ET", "AB", "HR_ALL", "TTS_ALL", "SCR", "IT", "PB", "LPP", "AIR"),
    ISTAR: ("ET", "AB", "HR_ALL", "TTS_ALL", "SCR", "IT", "PB", "LPP", "AIR"),
    WIDA: ("ET", "AB", "IT", "LPP", "PB", "SCR", "RAS"),
}
# How much more often than the rest a code is chosen: extra time leads, then readers and scribes.
_CODE_WEIGHTS = {"ET": 6, "HR_XRD": 3, "TTS_XRD": 3, "HR_ALL": 2, "TTS_ALL": 2, "SCR": 2, "IT": 2, "AB": 2}
# Pairs that are NOT valid: an English proficiency test read in Spanish or with a calculator.
INVALID_PAIRS = ((WIDA, "CAL_OL_ALL"), (WIDA, "ST"), (IREAD_3, "CAL_OL_ALL"))
UNKNOWN_SUBJECT, UNKNOWN_ACCOMMODATION = "27", "CALC"  # not in the seed's descriptor tables
# Students with these primary disabilities may take the alternate assessment (I AM) instead of ILEARN.
_ALTERNATE = tuple(DISABILITIES.index(c) for c in ("06", "05", "10"))


def _tests(grade: int, alternate: str | None, eb: bool) -> list[tuple[str, str]]:
    """The (state test, subject) pairs a student of this grade sits this year; `alternate` is the name
    the SIS gives the alternate assessment, if the student takes it."""
    tests: list[tuple[str, str]] = []
    if alternate and grade >= 3:
        tests += [(alternate, "01"), (alternate, "02")]
    elif 3 <= grade <= 8:
        tests += [(ILEARN_3_8, "01"), (ILEARN_3_8, "02")]
        tests += [(ILEARN_3_8, "03")] if grade in (4, 6) else [(ILEARN_3_8, "04")] if grade == 5 else []
        tests += [(IREAD_3, "01")] if grade == 3 else []
    elif grade in (9, 10):
        tests.append((ILEARN_BIOLOGY, "25"))
    elif grade >= 11:
        tests.append((ILEARN_GOVERNMENT, "26"))
    if eb and grade >= 0:
        tests.append((WIDA, "01"))
    return tests


def school_year_rows(year: int) -> list[tuple[int, date | None, date | None]]:
    """The School Years editor: a full row, a row without an end date, and a future row left blank."""
    return [
        (year - 2, date(year - 3, 8, 1), date(year - 2, 6, 15)),
        (year - 1, date(year - 2, 8, 1), None),
        (year, date(year - 1, 8, 1), date(year, 6, 15)),
        (year + 1, None, None),
    ]


def write_campus(out: Output, pop: Population, seed: int) -> dict[str, int]:
    clock = pop.clock
    y = clock.year
    rng = rng_for(seed, "campus")
    schools = pop.schools
    n_schools = len(schools)
    school_ids = texts([str(s.index + 1) for s in schools])
    excluded_school = np.array([s.band == "daep" for s in schools])

    with out.csv("campus__schools") as csv_out:
        csv_out.write([
            school_ids.tolist(), [s.in_number for s in schools], [s.name for s in schools], flag(excluded_school)
        ])  # fmt: skip

    # One calendar per school and year; the first high school also runs a virtual academy this year
    # whose calendar is State Exclude.
    years = (y - 1, y)
    calendar_ids = texts(strs(1_000 + np.arange(len(years) * n_schools + 1)))
    virtual_calendar = len(calendar_ids) - 1
    with out.csv("campus__calendars") as csv_out:
        csv_out.write([
            calendar_ids.tolist(),
            [*(school_ids.tolist() * len(years)), school_ids[0]],
            [str(year) for year in years for _ in range(n_schools)] + [str(y)],
            ["N"] * (len(calendar_ids) - 1) + ["Y"],
        ])  # fmt: skip

    with out.csv("campus__school_years") as csv_out:
        rows = school_year_rows(y)
        csv_out.write([
            [str(r[0]) for r in rows],
            [r[1].isoformat() if r[1] else "" for r in rows],
            [r[2].isoformat() if r[2] else "" for r in rows],
        ])  # fmt: skip

    person_ids = texts(strs(5_000_001 + np.arange(pop.n)))
    accommodated = _accommodated(rng, pop)
    missing_edfi = at_least(rng, accommodated & (rng.random(pop.n) < 0.002), 1, accommodated)
    edfi_ids = np.where(missing_edfi, "", pop.stn)

    with out.csv("campus__persons", bom=True) as csv_out:
        out.quirk(csv_out.file, "bom")
        write_blocks(csv_out, pop.n, lambda r: [
            person_ids[r].tolist(), edfi_ids[r].tolist(), pop.local_id[r].tolist(),
            pop.first[r].tolist(), pop.last[r].tolist(),
        ])  # fmt: skip

    # This year's enrollment: the virtual academy's students are only in its excluded calendar, and a few
    # enrollments are No Shows. Both groups include students with accommodations, so the rules bite.
    first_high = (pop.school == 0) & (pop.grade >= 9) & pop.active
    virtual = at_least(rng, first_high & (rng.random(pop.n) < 0.01), 3, first_high)
    virtual = at_least(rng, virtual & accommodated, 1, first_high & accommodated) | virtual
    no_show = spread(rng, pop.n, 0.005, 3) & pop.active & ~virtual
    no_show = at_least(rng, no_show & accommodated, 1, pop.active & ~virtual & accommodated) | no_show
    current_calendar = np.where(virtual, virtual_calendar, n_schools + pop.school)
    begin = np.maximum(clock.first_day(y), pop.entry)
    end = np.where(pop.active, 0, pop.left)
    # Last year's enrollment, for students who were here: the same school unless they changed band.
    here_before = np.flatnonzero(pop.years_here >= 1)
    previous_school = _previous_school(rng, pop)

    def last_year(rows: slice) -> list[list[str]]:
        s = here_before[rows]
        n = len(s)
        return [
            strs(1 + np.arange(len(here_before))[rows]),
            person_ids[s].tolist(),
            calendar_ids[previous_school[s]].tolist(),
            clock.iso(np.full(n, clock.first_day(y - 1))),
            clock.iso(np.full(n, clock.last_day(y - 1))),
            ["N"] * n,
        ]

    def this_year(rows: slice) -> list[list[str]]:
        s = np.arange(pop.n)[rows]
        return [
            strs(1 + len(here_before) + s),
            person_ids[s].tolist(),
            calendar_ids[current_calendar[s]].tolist(),
            clock.iso(begin[s]),
            clock.iso(end[s], blank=pop.active[s]),
            flag(no_show[s]),
        ]

    with out.csv("campus__enrollments") as csv_out:
        write_blocks(csv_out, len(here_before), last_year)
        write_blocks(csv_out, pop.n, this_year)

    sendable = accommodated & ~(virtual | no_show | missing_edfi | excluded_school[pop.school])
    cases = _write_accommodations(out, rng_for(seed, "accommodations"), pop, accommodated, sendable)
    return cases | {
        "campus_schools_state_exclude": int(excluded_school.sum()),
        "campus_calendars_state_exclude": 1,
        "campus_school_years_blank_date": sum(1 for r in school_year_rows(y) if r[1] is None or r[2] is None),
        "campus_enrollments_no_show": int(no_show.sum()),
        "campus_persons_missing_edfi_id": int(missing_edfi.sum()),
        "campus_accommodated_in_excluded_school": int((accommodated & excluded_school[pop.school]).sum()),
        "campus_accommodated_in_excluded_calendar": int((accommodated & virtual).sum()),
        "campus_accommodated_no_show": int((accommodated & no_show).sum()),
    }


def _accommodated(rng: np.random.Generator, pop: Population) -> np.ndarray:
    """About one student in eight: most with an IEP or a 504 plan, some emergent bilinguals."""
    share = np.where(pop.sped, 0.55, np.where(pop.section_504, 0.5, np.where(pop.eb, 0.2, 0.005)))
    tested = (pop.grade >= 3) | (pop.eb & (pop.grade >= 0))
    accommodated = tested & (rng.random(pop.n) < share)
    # However small the district, every state test and every exclusion has accommodated students.
    daep = pop.school == len(pop.schools) - 1
    virtual_academy = (pop.school == 0) & (pop.grade >= 9) & pop.active  # see write_campus
    groups = (
        (tested, 15),
        (pop.sped & (pop.grade >= 3), 3),
        (pop.grade == 3, 1),
        (pop.eb & tested, 1),
        (daep, 1),
        (virtual_academy, 1),
    )
    for group, k in groups:
        accommodated |= at_least(rng, accommodated & group, k, tested & group)
    return accommodated


def _previous_school(rng: np.random.Generator, pop: Population) -> np.ndarray:
    """Index of last year's calendar: the same school, or one of the band that held last year's grade."""
    school = pop.school.copy()
    low = np.array([s.low for s in pop.schools])[school]
    moved = (pop.grade - 1 < low) | (pop.school == len(pop.schools) - 1)
    for band in ("elementary", "middle", "high"):
        ids = np.array([s.index for s in pop.schools if s.band == band])
        lo, hi = pop.schools[ids[0]].low, pop.schools[ids[0]].high
        here = moved & (pop.grade - 1 >= lo) & (pop.grade - 1 <= hi)
        school[here] = rng.choice(ids, size=int(here.sum()))
    return school


def _write_accommodations(
    out: Output, rng: np.random.Generator, pop: Population, accommodated: np.ndarray, sendable: np.ndarray
) -> dict[str, int]:
    """One row per (student, test, subject, accommodation); each rule's exception is on a `sendable`
    student (enrolled, not excluded, with an Ed-Fi id), so the exception is the only reason not to send."""
    clock = pop.clock
    person, test, subject, code = _accommodation_rows(rng, pop, accommodated)

    # The plan's dates, per student: current, ended before as_of, or not started yet.
    ended = at_least(rng, sendable & (rng.random(pop.n) < 0.05), 1, sendable)
    future = at_least(rng, sendable & ~ended & (rng.random(pop.n) < 0.03), 1, sendable & ~ended)
    start = -rng.integers(1, 330, size=pop.n)
    start = np.where(ended, -rng.integers(400, 700, size=pop.n), start)
    start = np.where(future, rng.integers(1, 60, size=pop.n), start)
    end = start + 365 + rng.integers(0, 30, size=pop.n)  # an annual plan
    current = sendable & ~ended & ~future
    open_ended = at_least(rng, accommodated & ~ended & ~future & (rng.random(pop.n) < 0.15), 1, current)
    modified = np.minimum(start, 0) - rng.integers(0, 10, size=pop.n)
    modified_second = rng.integers(12 * 3600, 23 * 3600, size=pop.n)

    # Rows that each break one rule, added to students whose plan is otherwise sendable today.
    k = max(1, round(len(person) * 0.003))
    exceptions = {
        "unmapped_assessment": [
            (UNMAPPED_TESTS[j % len(UNMAPPED_TESTS)], "02", "ET") for j in range(max(2, 3 * k))
        ],
        "invalid_pair": [(t, "01", c) for t, c in INVALID_PAIRS * k],
        "unknown_subject": [(ILEARN_3_8, UNKNOWN_SUBJECT, "ET")] * k,
        "unknown_accommodation": [(ILEARN_3_8, "02", UNKNOWN_ACCOMMODATION)] * k,
    }
    extra = [row for rows in exceptions.values() for row in rows]
    candidates = np.flatnonzero(current)
    who = rng.choice(candidates, size=len(extra), replace=len(candidates) < len(extra))
    order = np.argsort(np.concatenate([person, who]), kind="stable")  # each student's rows together
    person = np.concatenate([person, who])[order]
    test, subject, code = (
        np.concatenate([values, texts([row[j] for row in extra])])[order]
        for j, values in enumerate((test, subject, code))
    )
    n = len(person)

    def block(rows: slice) -> list[list[str]]:
        p = person[rows]
        return [
            strs(900_001 + np.arange(n)[rows]),
            strs(5_000_001 + p),
            test[rows].tolist(),
            subject[rows].tolist(),
            code[rows].tolist(),
            clock.iso(start[p]),
            clock.iso(end[p], blank=open_ended[p]),
            clock.stamp(modified[p], modified_second[p]),
        ]

    with out.csv("campus__test_accommodations") as csv_out:
        write_blocks(csv_out, n, block)
    return {
        "campus_accommodations_ended": int(ended[person].sum()),
        "campus_accommodations_not_started": int(future[person].sum()),
        "campus_accommodations_open_ended": int(open_ended[person].sum()),
    } | {f"campus_accommodations_{kind}": len(rows) for kind, rows in exceptions.items()}


def _accommodation_rows(
    rng: np.random.Generator, pop: Population, accommodated: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per accommodated student, each test and subject they sit with one to three valid accommodations."""
    draw = random.Random(int(rng.integers(2**63)))
    can_take = accommodated & pop.sped & (pop.grade >= 3)
    alternate = at_least(
        rng, can_take & np.isin(pop.disability, _ALTERNATE) & (rng.random(pop.n) < 0.35), 2, can_take
    )
    # Some SIS records still carry the alternate assessment's former name; both names always appear.
    legacy = alternate & (rng.random(pop.n) < 0.2)
    named = rng.permutation(np.flatnonzero(alternate))
    legacy[named[0]], legacy[named[1]] = False, True
    alternate_name = np.where(legacy, ISTAR, np.where(alternate, I_AM, None))
    person, test, subject, code = [], [], [], []
    for s, grade, alt, eb in zip(
        np.flatnonzero(accommodated).tolist(),
        pop.grade[accommodated].tolist(),
        alternate_name[accommodated].tolist(),
        pop.eb[accommodated].tolist(),
        strict=True,
    ):
        for name, subj in _tests(grade, alt, eb):
            codes = VALID_ACCOMMODATIONS[name]
            # Weighted sampling without replacement: the k largest of u ** (1 / weight).
            keys = [draw.random() ** (1 / _CODE_WEIGHTS.get(c, 1)) for c in codes]
            for _, c in sorted(zip(keys, codes, strict=True))[-draw.choice((1, 1, 2, 2, 3)) :]:
                person.append(s)
                test.append(name)
                subject.append(subj)
                code.append(c)
    return np.array(person, dtype=np.int64), texts(test), texts(subject), texts(code)
