"""PowerSchool export (SPEC §3.3, seed 001 §2.1), with the alert and doctor fields repurposed as the seed's
attribute mapping expects (`Doctor Phone` = is identified as homeless, and so on)."""

from __future__ import annotations

import numpy as np

from sg_orchestration.generate.common import (
    Output,
    blank_where,
    flag,
    pick,
    rng_for,
    strs,
    texts,
    write_blocks,
)
from sg_orchestration.generate.population import (
    DISTRICT_NAME,
    FIRST_F,
    FIRST_M,
    LAST,
    MEDICAL_ALERTS,
    TX_DISTRICT,
    Population,
)
from sg_orchestration.generate.roster import (
    COURSES,
    RELATIONSHIPS,
    Roster,
    contact_emails,
    contact_ids,
    contact_phones,
    section_ids,
    teacher_emails,
    teacher_ids,
)

# McKinney-Vento primary nighttime residence (EDFacts codes): doubled-up, shelters, hotels, unsheltered.
NIGHTTIME_RESIDENCES = ("DOUBLE", "STH", "HOTMOT", "UNSHELTERED")
_NIGHTTIME_SHARE = (0.75, 0.12, 0.07, 0.06)
LUNCH_STATUSES = ("F", "R", "P")  # free, reduced, paid: the population's `lunch` indexes them
# fmt: off
CITIES = (("Cedar Springs", "78613"), ("Bluebonnet", "78660"), ("Pecan Grove", "78664"), ("Live Oak", "78641"))
STREETS = ("Oak", "Elm", "Pecan", "Mesquite", "Bluebonnet", "Ranch Road", "Mockingbird", "Cypress", "Main",
           "Lamar")
# fmt: on
STREET_KINDS = ("St", "Ave", "Dr", "Ln", "Trl", "Blvd")
EXTRA_COLUMN = "Locker Number"  # a column the catalog does not know: kept in raw, ignored downstream
EMAIL_DOMAIN = "students.demoisd.net"


class Addresses:
    """Street, city, state and postal code of each student's home; unsheltered students have none."""

    def __init__(self, pop: Population, seed: int):
        rng = rng_for(seed, "addresses")
        self.number = rng.integers(100, 9999, size=pop.n)
        self.street = rng.integers(len(STREETS), size=pop.n)
        self.kind = rng.integers(len(STREET_KINDS), size=pop.n)
        self.city = rng.integers(len(CITIES), size=pop.n)
        residence = rng.choice(len(NIGHTTIME_RESIDENCES), size=pop.n, p=_NIGHTTIME_SHARE)
        self.residence = np.where(pop.homeless, residence, -1)
        # At least one unsheltered student, whose home address is blank.
        self.residence[np.flatnonzero(pop.homeless)[:1]] = NIGHTTIME_RESIDENCES.index("UNSHELTERED")

    def street_of(self, s: np.ndarray) -> list[str]:
        streets = [
            f"{n} {STREETS[k]} {STREET_KINDS[t]}"
            for n, k, t in zip(
                self.number[s].tolist(), self.street[s].tolist(), self.kind[s].tolist(), strict=True
            )
        ]
        return np.where(self.unsheltered(s), "", np.asarray(streets, dtype=object)).tolist()

    def unsheltered(self, s: np.ndarray) -> np.ndarray:
        return self.residence[s] == NIGHTTIME_RESIDENCES.index("UNSHELTERED")

    def residence_of(self, s: np.ndarray) -> list[str]:
        return pick(("", *NIGHTTIME_RESIDENCES), self.residence[s] + 1)


def student_email(pop: Population, s: np.ndarray) -> list[str]:
    """Students from grade 3 up have an email address."""
    email = "s" + pop.local_id[s] + "@" + EMAIL_DOMAIN
    return np.where(pop.grade[s] >= 3, email, "").tolist()


def homeroom(pop: Population, s: np.ndarray) -> list[str]:
    """Elementary students have a homeroom teacher's room; the rest have none."""
    room = (100 + (pop.local[s] * 7 % 40)).astype(str)
    return np.where(pop.grade[s] <= 5, np.char.add("Rm ", room), "").astype(object).tolist()


def write_powerschool(out: Output, pop: Population, roster: Roster, seed: int) -> dict[str, int]:
    addresses = Addresses(pop, seed)
    school_numbers = texts([s.number for s in pop.schools])
    lockers = rng_for(seed, "lockers").integers(1, 2400, size=pop.n)

    def students(rows: slice) -> list[list[str]]:
        s = np.arange(pop.n)[rows]
        homeless = pop.homeless[s]
        city = addresses.city[s]
        return [
            pop.local_id[s].tolist(),
            pop.state_id[s].tolist(),
            pop.first[s].tolist(),
            pop.middle[s].tolist(),
            pop.last[s].tolist(),
            strs(pop.grade[s]),
            school_numbers[pop.school[s]].tolist(),
            np.where(pop.active[s], "0", "2").tolist(),
            student_email(pop, s),
            flag(pop.female[s], "F", "M"),
            pop.birth_date[s].tolist(),
            addresses.street_of(s),
            pick([c[0] for c in CITIES], city),
            ["TX"] * len(s),
            pick([c[1] for c in CITIES], city),
            homeroom(pop, s),
            addresses.residence_of(s),  # Alert Other: homeless primary nighttime residence
            np.where(homeless, flag(pop.unaccompanied[s]), "").tolist(),  # Alert Other Expires: unaccompanied
            flag(homeless),  # Doctor Phone: is identified as homeless
            flag(pop.eb[s]),  # Alert MedicalExpires: ell status
            pick(LUNCH_STATUSES, pop.lunch[s]),  # Alert Guardian: lunch status
            pick(MEDICAL_ALERTS, pop.medical[s]),  # Alert Medical
            flag(pop.sped[s]),  # Doctor Name: special education status
            np.where(pop.grade[s] >= 9, strs(lockers[s]), "").tolist(),  # Locker Number
        ]

    with out.csv("powerschool__students", extra_columns=[EXTRA_COLUMN]) as csv_out:
        write_blocks(csv_out, pop.n, students)
        first_multiline = int(np.flatnonzero(pop.medical == 1)[0])
        out.quirk(csv_out.file, "extra_column", column=EXTRA_COLUMN)
        out.quirk(
            csv_out.file, "quoted_comma_newline", row=csv_out.row_of(first_multiline), column="Alert Medical"
        )

    first_names, last_names = texts(FIRST_F + FIRST_M), texts(LAST)

    def contacts(rows: slice) -> list[list[str]]:
        c = np.arange(len(roster.contact_student))[rows]
        first, last = first_names[roster.contact_first[c]], last_names[roster.contact_last[c]]
        home, cell = contact_phones(roster, c)
        return [
            contact_ids(c),
            pop.local_id[roster.contact_student[c]].tolist(),
            first.tolist(),
            last.tolist(),
            blank_where(contact_emails(roster, c), ~roster.contact_has_email[c]),
            home,
            cell,
            pick([r[0] for r in RELATIONSHIPS], roster.contact_relationship[c]),
        ]

    with out.csv("powerschool__contacts") as csv_out:
        write_blocks(csv_out, len(roster.contact_student), contacts)

    with out.csv("powerschool__schools") as csv_out:
        csv_out.write(
            [
                [s.number for s in pop.schools],
                [s.name for s in pop.schools],
                [TX_DISTRICT] * len(pop.schools),
                [DISTRICT_NAME] * len(pop.schools),
            ]
        )

    teachers = np.arange(len(roster.teacher_school))
    with out.csv("powerschool__teachers") as csv_out:
        first, last = first_names[roster.teacher_first], last_names[roster.teacher_last]
        csv_out.write(
            [
                teacher_ids(teachers),
                first.tolist(),
                last.tolist(),
                teacher_emails(roster, teachers),
                school_numbers[roster.teacher_school].tolist(),
            ]
        )

    with out.csv("powerschool__terms") as csv_out:
        terms = roster.terms
        csv_out.write(
            [
                [t.id for t in terms],
                [t.name for t in terms],
                [t.start.isoformat() for t in terms],
                [t.end.isoformat() for t in terms],
                [str(t.year) for t in terms],
            ]
        )

    sections = np.arange(len(roster.section_school))
    with out.csv("powerschool__sections") as csv_out:
        csv_out.write(
            [
                section_ids(sections),
                pick([c.number for c in COURSES], roster.section_course),
                pick([c.name for c in COURSES], roster.section_course),
                school_numbers[roster.section_school].tolist(),
                pick([t.id for t in roster.terms], roster.section_term),
                teacher_ids(roster.section_teacher),
                np.where(roster.section_period > 0, strs(roster.section_period), "HR").tolist(),
            ]
        )

    def enrollments(rows: slice) -> list[list[str]]:
        return [
            section_ids(roster.enrollment_section[rows]),
            pop.local_id[roster.enrollment_student[rows]].tolist(),
            pop.clock.iso(roster.enrollment_begin[rows]),
            pop.clock.iso(roster.enrollment_end[rows]),
        ]

    with out.csv("powerschool__enrollments") as csv_out:
        write_blocks(csv_out, len(roster.enrollment_student), enrollments)

    return {
        "powerschool_students_homeless": int(pop.homeless.sum()),
        "powerschool_students_unaccompanied_youth": int(pop.unaccompanied.sum()),
        "powerschool_students_unsheltered": int(addresses.unsheltered(np.arange(pop.n)).sum()),
        "powerschool_students_withdrawn": int((~pop.active).sum()),
        "powerschool_students_medical_alert_multiline": int((pop.medical == 1).sum()),
    }
