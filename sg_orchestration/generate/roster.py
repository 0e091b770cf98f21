"""The SIS roster behind both the PowerSchool export and the OneRoster bundle: terms, teachers, sections,
section enrollments and contacts, as parallel arrays over the population."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from sg_orchestration.generate.common import Clock, rng_for, school_days, strs, texts
from sg_orchestration.generate.population import FIRST_F, FIRST_M, LAST, Population

STAFF_DOMAIN = "demoisd.net"
PERIODS = 7  # a secondary student takes six of the seven periods
CLASS_SIZE, HOMEROOM_SIZE = 25, 22
# OneRoster grade names, indexed by PowerSchool grade + 1.
GRADE_NAMES = ("PK", "KG", *(f"{g:02d}" for g in range(1, 13)))


@dataclass(frozen=True)
class Course:
    number: str
    name: str
    subject: str
    grades: tuple[int, ...]


HOMEROOMS = tuple(
    Course(f"HR{GRADE_NAMES[g + 1]}", f"Homeroom Grade {GRADE_NAMES[g + 1]}", "Homeroom", (g,))
    for g in range(-1, 6)
)
_MS, _HS = (6, 7, 8), (9, 10, 11, 12)
SECONDARY_COURSES = {
    "middle": (
        Course("MELA", "English Language Arts", "English Language Arts", _MS),
        Course("MMTH", "Mathematics", "Mathematics", _MS),
        Course("MSCI", "Science", "Science", _MS),
        Course("MSOC", "Social Studies", "Social Studies", _MS),
        Course("MPE", "Physical Education", "Physical Education", _MS),
        Course("MART", "Art", "Fine Arts", _MS),
        Course("MBND", "Band", "Fine Arts", _MS),
        Course("MSPN", "Spanish I", "World Languages", _MS),
    ),
    "high": (
        Course("ENG1", "English I", "English Language Arts", (9,)),
        Course("ENG2", "English II", "English Language Arts", (10,)),
        Course("ENG3", "English III", "English Language Arts", (11,)),
        Course("ENG4", "English IV", "English Language Arts", (12,)),
        Course("ALG1", "Algebra I", "Mathematics", (9, 10)),
        Course("GEOM", "Geometry", "Mathematics", (9, 10)),
        Course("ALG2", "Algebra II", "Mathematics", (10, 11)),
        Course("PREC", "Precalculus", "Mathematics", (11, 12)),
        Course("BIO", "Biology", "Science", (9, 10)),
        Course("CHEM", "Chemistry", "Science", (10, 11)),
        Course("PHYS", "Physics", "Science", (11, 12)),
        Course("WHIS", "World History", "Social Studies", (9, 10)),
        Course("USHI", "U.S. History", "Social Studies", (11,)),
        Course("GOVT", "U.S. Government", "Social Studies", (12,)),
        Course("SPN2", "Spanish II", "World Languages", _HS),
        Course("CSCI", "Computer Science I", "Technology", _HS),
        Course("HPE", "Physical Education", "Physical Education", _HS),
        Course("HART", "Art I", "Fine Arts", _HS),
    ),
}
SECONDARY_COURSES["daep"] = SECONDARY_COURSES["high"]
COURSES = HOMEROOMS + SECONDARY_COURSES["middle"] + SECONDARY_COURSES["high"]
_COURSE_INDEX = {c.number: k for k, c in enumerate(COURSES)}

# (relationship, female, OneRoster role): the first contact, the second, and any further ones.
RELATIONSHIPS = (
    ("Mother", True, "parent"),
    ("Father", False, "parent"),
    ("Grandmother", True, "guardian"),
    ("Legal Guardian", True, "guardian"),
    ("Foster Parent", False, "guardian"),
    ("Stepfather", False, "parent"),
    ("Grandfather", False, "guardian"),
    ("Aunt", True, "guardian"),
    ("Uncle", False, "guardian"),
)
_RELATIONSHIP_SHARE = (
    (0.62, 0.23, 0.07, 0.05, 0.03, 0, 0, 0, 0),
    (0.15, 0.60, 0.10, 0, 0, 0.10, 0, 0.05, 0),
    (0, 0, 0.35, 0, 0, 0, 0.20, 0.25, 0.20),
)


@dataclass(frozen=True)
class Term:
    id: str
    name: str
    start: date
    end: date
    year: int  # school year END year
    kind: str  # OneRoster session type

    @property
    def parent(self) -> str:
        """The id of the year-long term a semester belongs to (blank for a year-long term)."""
        return "" if self.kind == "schoolYear" else str(int(self.id) // 100 * 100)


def terms_of(clock: Clock) -> tuple[Term, ...]:
    """PowerSchool's terms for the current and the previous school year (term id 3500 = 2025-26)."""
    out = []
    for y in (clock.year - 1, clock.year):
        base = (y - 1991) * 100
        first, last = school_days(y)
        out += [
            Term(str(base), f"{y - 1}-{y}", first, last, y, "schoolYear"),
            Term(str(base + 1), "S1", first, date(y - 1, 12, 19), y, "semester"),
            Term(str(base + 2), "S2", date(y, 1, 6), last, y, "semester"),
        ]
    return tuple(out)


class Roster:
    """Teachers and sections per school, every student's sections this year, and every student's contacts."""

    def __init__(self, pop: Population, seed: int):
        self.pop = pop
        self.terms = terms_of(pop.clock)
        self.current_terms = [k for k, t in enumerate(self.terms) if t.year == pop.clock.year]
        rng = rng_for(seed, "roster")
        self._sections(rng)
        self._enrollments(rng)
        self._contacts(rng_for(seed, "contacts"))

    def _sections(self, rng: np.random.Generator) -> None:
        pop = self.pop
        n_schools = len(pop.schools)
        size = np.bincount(pop.school, minlength=n_schools)
        by_grade = np.zeros((n_schools, 14), dtype=np.int64)
        np.add.at(by_grade, (pop.school, pop.grade + 1), 1)
        year, s1, s2 = self.current_terms
        school, course, period, term, teacher = [], [], [], [], []
        teachers: list[int] = []  # school of each teacher
        for s in pop.schools:
            if s.secondary:
                per_period = max(1, -(-int(size[s.index]) * 6 // (PERIODS * CLASS_SIZE)))
                catalog = [_COURSE_INDEX[c.number] for c in SECONDARY_COURSES[s.band]]
                staff = max(2, -(-per_period * PERIODS // 6))
                for p in range(1, PERIODS + 1):
                    school += [s.index] * per_period
                    course += rng.choice(catalog, size=per_period).tolist()
                    period += [p] * per_period
                    if p < PERIODS:
                        term += [year] * per_period
                    else:  # the last period holds semester electives, half in each semester
                        term += [s1 if k % 2 == 0 else s2 for k in range(per_period)]
                    teacher += (len(teachers) + rng.integers(0, staff, size=per_period)).tolist()
            else:
                staff = 0
                for g in range(-1, 6):
                    rooms = -(-int(by_grade[s.index, g + 1]) // HOMEROOM_SIZE)
                    school += [s.index] * rooms
                    course += [_COURSE_INDEX[HOMEROOMS[g + 1].number]] * rooms
                    period += [0] * rooms  # a homeroom has no period
                    term += [year] * rooms
                    teacher += list(range(len(teachers) + staff, len(teachers) + staff + rooms))
                    staff += rooms
                staff += 2  # art and music teach no homeroom
            teachers += [s.index] * staff
        self.section_school = np.array(school, dtype=np.int64)
        self.section_course = np.array(course, dtype=np.int64)
        self.section_period = np.array(period, dtype=np.int64)
        self.section_term = np.array(term, dtype=np.int64)
        self.section_teacher = np.array(teacher, dtype=np.int64)
        self.teacher_school = np.array(teachers, dtype=np.int64)
        self.teacher_female = rng.random(len(teachers)) < 0.75
        self.teacher_first = np.where(
            self.teacher_female,
            rng.integers(len(FIRST_F), size=len(teachers)),
            len(FIRST_F) + rng.integers(len(FIRST_M), size=len(teachers)),
        )
        self.teacher_last = rng.integers(len(LAST), size=len(teachers))

    def _enrollments(self, rng: np.random.Generator) -> None:
        """Each elementary student in a homeroom of their grade; each secondary student in six periods."""
        pop = self.pop
        n_schools = len(pop.schools)
        # A section's slot is its period at a secondary school and its homeroom course (one per grade) at
        # an elementary school. Sections were built grouped by (school, slot): a group is a start and a count.
        slot = np.where(self.section_period > 0, self.section_period - 1, self.section_course)
        key = self.section_school * len(COURSES) + slot
        start = np.full(n_schools * len(COURSES), -1, dtype=np.int64)
        count = np.zeros(n_schools * len(COURSES), dtype=np.int64)
        first = np.r_[True, key[1:] != key[:-1]]
        start[key[first]] = np.flatnonzero(first)
        np.add.at(count, key, 1)

        secondary = np.array([s.secondary for s in pop.schools])[pop.school]
        elementary = np.flatnonzero(~secondary)
        homeroom = np.array([_COURSE_INDEX[c.number] for c in HOMEROOMS])[pop.grade[elementary] + 1]
        slots = [(elementary, homeroom)]
        upper = np.flatnonzero(secondary)
        periods = np.argsort(rng.random((len(upper), PERIODS)), axis=1)[:, :6]  # six distinct periods
        slots.append((np.repeat(upper, 6), periods.ravel()))
        student = np.concatenate([s for s, _ in slots])
        g = pop.school[student] * len(COURSES) + np.concatenate([k for _, k in slots])
        section = start[g] + (rng.random(len(student)) * count[g]).astype(np.int64)
        order = np.argsort(student, kind="stable")
        self.enrollment_student, self.enrollment_section = student[order], section[order]

        # A student who withdrew has sections until the withdrawal; none in a term that began after it.
        term_start = np.array([pop.clock.day(t.start) for t in self.terms])
        term_end = np.array([pop.clock.day(t.end) for t in self.terms])
        t = self.section_term[self.enrollment_section]
        s = self.enrollment_student
        begin = np.maximum(term_start[t], np.minimum(pop.entry[s], term_end[t]))
        end = np.where(pop.active[s], term_end[t], np.minimum(term_end[t], pop.left[s]))
        keep = end >= begin
        self.enrollment_student, self.enrollment_section = s[keep], self.enrollment_section[keep]
        self.enrollment_begin, self.enrollment_end = begin[keep], end[keep]

    def _contacts(self, rng: np.random.Generator) -> None:
        pop = self.pop
        k = rng.choice(4, size=pop.n, p=(0.15, 0.5, 0.25, 0.1)) + 1
        self.contact_student = np.repeat(np.arange(pop.n), k)
        m = len(self.contact_student)
        position = np.minimum(np.arange(m) - np.repeat(np.cumsum(k) - k, k), 2)
        shares = np.array(_RELATIONSHIP_SHARE, dtype=float)
        cumulative = np.cumsum(shares / shares.sum(axis=1, keepdims=True), axis=1)[position]
        self.contact_relationship = (rng.random((m, 1)) > cumulative).sum(axis=1)
        female = np.array([r[1] for r in RELATIONSHIPS])[self.contact_relationship]
        self.contact_first = np.where(
            female, rng.integers(len(FIRST_F), size=m), len(FIRST_F) + rng.integers(len(FIRST_M), size=m)
        )
        self.contact_last = np.where(
            rng.random(m) < 0.8, pop.last_idx[self.contact_student], rng.integers(len(LAST), size=m)
        )
        self.contact_has_email = rng.random(m) < 0.7
        self.contact_has_home_phone = rng.random(m) < 0.45
        self.contact_phone = rng.integers(0, 10_000_000, size=m)


def teacher_ids(teachers: np.ndarray) -> list[str]:
    return strs(5_001 + teachers)


def section_ids(sections: np.ndarray) -> list[str]:
    return strs(20_001 + sections)


def contact_ids(contacts: np.ndarray) -> list[str]:
    return strs(300_001 + contacts)


def teacher_emails(roster: Roster, teachers: np.ndarray) -> list[str]:
    first = texts(FIRST_F + FIRST_M)[roster.teacher_first[teachers]]
    last = texts(LAST)[roster.teacher_last[teachers]]
    return _emails(first, last, 5_001 + teachers, STAFF_DOMAIN)


def contact_emails(roster: Roster, contacts: np.ndarray) -> list[str]:
    first = texts(FIRST_F + FIRST_M)[roster.contact_first[contacts]]
    last = texts(LAST)[roster.contact_last[contacts]]
    return _emails(first, last, contacts % 1000, "example.com")


def _emails(first: np.ndarray, last: np.ndarray, suffix: np.ndarray, domain: str) -> list[str]:
    """`first.last{suffix}@domain`, lower case, without the spaces and apostrophes of some surnames."""
    return [
        f"{f}.{n}{k}@{domain}".lower().replace(" ", "").replace("'", "")
        for f, n, k in zip(first.tolist(), last.tolist(), suffix.tolist(), strict=True)
    ]


def contact_phones(roster: Roster, contacts: np.ndarray) -> tuple[list[str], list[str]]:
    """(home phone, cell phone) of each contact; fewer than half still have a home line."""
    cell = roster.contact_phone[contacts]
    home = np.where(roster.contact_has_home_phone[contacts], _phones(cell // 100), "")
    return home.tolist(), _phones(cell)


def _phones(numbers: np.ndarray) -> list[str]:
    """Fictional numbers only: 555-01XX is reserved for fiction."""
    return [f"(512) 555-01{n % 100:02d}" for n in numbers.tolist()]
