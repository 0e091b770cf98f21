"""A OneRoster 1.1 bulk bundle from "another SIS" (seed 001 §2.2), for the same district as the PowerSchool
export; its users.csv already carries the `metadata.*` extension columns the Student Support Tracker reads."""

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
from sg_orchestration.generate.powerschool import (
    CITIES,
    LUNCH_STATUSES,
    Addresses,
    homeroom,
    student_email,
)
from sg_orchestration.generate.roster import (
    COURSES,
    GRADE_NAMES,
    RELATIONSHIPS,
    Roster,
    contact_emails,
    contact_ids,
    contact_phones,
    section_ids,
    teacher_emails,
    teacher_ids,
)

# The seed's metadata extensions, snake_case, in the order the mapping table lists them.
STUDENT_METADATA = (
    "metadata.student_number",
    "metadata.state_identifier",
    "metadata.homeless_primary_nighttime_residence",
    "metadata.homeless_unaccompanied_youth",
    "metadata.is_identified_as_homeless",
    "metadata.birthdate",
    "metadata.address_line1",
    "metadata.city",
    "metadata.state",
    "metadata.postal",
    "metadata.homeroom",
    "metadata.ell_status",
    "metadata.lunch_status",
    "metadata.medical_alert",
    "metadata.sped_status",
)
CONTACT_METADATA = (
    "metadata.contact_email",
    "metadata.contact_home_phone",
    "metadata.contact_work_phone",
    "metadata.contact_relationship",
)
METADATA = STUDENT_METADATA + CONTACT_METADATA
MANIFEST = (
    ("manifest.version", "1.0"),
    ("oneroster.version", "1.1"),
    ("file.academicSessions", "bulk"),
    ("file.categories", "absent"),
    ("file.classes", "bulk"),
    ("file.classResources", "absent"),
    ("file.courses", "bulk"),
    ("file.courseResources", "absent"),
    ("file.demographics", "bulk"),
    ("file.enrollments", "bulk"),
    ("file.lineItems", "absent"),
    ("file.orgs", "bulk"),
    ("file.resources", "absent"),
    ("file.results", "absent"),
    ("file.users", "bulk"),
    ("source.systemName", "Demo SIS"),
    ("source.systemCode", "demo-sis"),
)
DISTRICT_ORG = "org-district"


def _true_false(mask: np.ndarray) -> list[str]:
    return flag(mask, "true", "false")


def guardian_ids(contacts: np.ndarray) -> list[str]:
    return ["gdn-" + k for k in contact_ids(contacts)]


def _blanks(n: int, k: int) -> list[list[str]]:
    return [[""] * n for _ in range(k)]


def write_oneroster(out: Output, pop: Population, roster: Roster, seed: int) -> dict[str, int]:
    clock = pop.clock
    schools = pop.schools
    org_ids = texts([f"org-{s.number}" for s in schools])
    student_ids = "stu-" + pop.local_id
    n_contacts = len(roster.contact_student)
    first_names, last_names = texts(FIRST_F + FIRST_M), texts(LAST)

    with out.csv("oneroster__manifest") as csv_out:
        csv_out.write([[k for k, _ in MANIFEST], [v for _, v in MANIFEST]])

    with out.csv("oneroster__orgs") as csv_out:
        n = len(schools) + 1
        csv_out.write([
            [DISTRICT_ORG, *org_ids.tolist()], *_blanks(n, 2),
            [DISTRICT_NAME, *(s.name for s in schools)],
            ["district", *(["school"] * len(schools))],
            [TX_DISTRICT, *(s.campus_id for s in schools)],
            ["", *([DISTRICT_ORG] * len(schools))],
        ])  # fmt: skip

    terms = roster.terms
    with out.csv("oneroster__academicSessions") as csv_out:
        csv_out.write([
            [f"as-{t.id}" for t in terms], *_blanks(len(terms), 2),
            [t.name if t.kind == "schoolYear" else f"{t.name} {t.year - 1}-{t.year}" for t in terms],
            [t.kind for t in terms],
            [t.start.isoformat() for t in terms],
            [t.end.isoformat() for t in terms],
            [f"as-{t.parent}" if t.parent else "" for t in terms],
            [str(t.year) for t in terms],
        ])  # fmt: skip

    year_session = f"as-{terms[roster.current_terms[0]].id}"
    course_grades = [",".join(GRADE_NAMES[g + 1] for g in c.grades) for c in COURSES]
    with out.csv("oneroster__courses") as csv_out:
        csv_out.write([
            [f"crs-{c.number}" for c in COURSES], *_blanks(len(COURSES), 2),
            [year_session] * len(COURSES),
            [c.name for c in COURSES],
            [c.number for c in COURSES],
            course_grades,
            [DISTRICT_ORG] * len(COURSES),
            [c.subject for c in COURSES],
            [""] * len(COURSES),
        ])  # fmt: skip

    class_ids = "cls-" + texts(section_ids(np.arange(len(roster.section_school))))
    course = roster.section_course
    homerooms = roster.section_period == 0
    with out.csv("oneroster__classes") as csv_out:
        n = len(class_ids)
        title = np.where(
            homerooms,
            pick([c.name for c in COURSES], course),
            texts(pick([c.name for c in COURSES], course))
            + " - Period "
            + texts(strs(roster.section_period)),
        )
        csv_out.write([
            class_ids.tolist(), *_blanks(n, 2),
            title.tolist(),
            pick(course_grades, course),
            pick([f"crs-{c.number}" for c in COURSES], course),
            section_ids(np.arange(n)),
            np.where(homerooms, "homeroom", "scheduled").tolist(),
            ["Rm " + str(100 + k % 60) for k in range(n)],
            org_ids[roster.section_school].tolist(),
            pick([f"as-{t.id}" for t in terms], roster.section_term),
            pick([c.subject for c in COURSES], course),
            [""] * n,
            np.where(homerooms, "", strs(roster.section_period)).tolist(),
        ])  # fmt: skip

    addresses = Addresses(pop, seed)
    # A student's contacts are consecutive: student k's are first_contact[k] up to first_contact[k + 1].
    first_contact = np.searchsorted(roster.contact_student, np.arange(pop.n + 1))

    def agents(s: np.ndarray) -> list[str]:
        """Each student's guardians, comma-separated."""
        lo = first_contact[s[0]]
        ids = guardian_ids(np.arange(lo, first_contact[s[-1] + 1]))
        bounds = zip((first_contact[s] - lo).tolist(), (first_contact[s + 1] - lo).tolist(), strict=True)
        return [",".join(ids[a:b]) for a, b in bounds]

    def students(rows: slice) -> list[list[str]]:
        s = np.arange(pop.n)[rows]
        n = len(s)
        homeless = pop.homeless[s]
        city = addresses.city[s]
        return [
            student_ids[s].tolist(), *_blanks(n, 2),
            _true_false(pop.active[s]),
            org_ids[pop.school[s]].tolist(),
            ["student"] * n,
            ("s" + pop.local_id[s]).tolist(),
            ("{SIS:" + pop.local_id[s] + "},{State:" + pop.state_id[s] + "}").tolist(),
            pop.first[s].tolist(),
            pop.last[s].tolist(),
            pop.middle[s].tolist(),
            pop.state_id[s].tolist(),  # the seed maps State Province Id to the human-readable identifier
            student_email(pop, s),
            *_blanks(n, 2),
            agents(s),
            pick(GRADE_NAMES, pop.grade[s] + 1),
            [""] * n,
            pop.local_id[s].tolist(),
            pop.state_id[s].tolist(),
            addresses.residence_of(s),
            np.where(homeless, _true_false(pop.unaccompanied[s]), "").tolist(),
            _true_false(homeless),
            pop.birth_date[s].tolist(),
            addresses.street_of(s),
            pick([c[0] for c in CITIES], city),
            ["TX"] * n,
            pick([c[1] for c in CITIES], city),
            homeroom(pop, s),
            _true_false(pop.eb[s]),
            pick(LUNCH_STATUSES, pop.lunch[s]),
            pick(MEDICAL_ALERTS, pop.medical[s]),
            _true_false(pop.sped[s]),
            *_blanks(n, len(CONTACT_METADATA)),
        ]  # fmt: skip

    def teachers(rows: slice) -> list[list[str]]:
        t = np.arange(len(roster.teacher_school))[rows]
        n = len(t)
        email = teacher_emails(roster, t)
        return [
            ("tch-" + texts(teacher_ids(t))).tolist(), *_blanks(n, 2),
            ["true"] * n,
            org_ids[roster.teacher_school[t]].tolist(),
            ["teacher"] * n,
            email,
            ("{SIS:" + texts(teacher_ids(t)) + "}").tolist(),
            first_names[roster.teacher_first[t]].tolist(),
            last_names[roster.teacher_last[t]].tolist(),
            [""] * n,
            teacher_ids(t),
            email,
            *_blanks(n, 5 + len(METADATA)),
        ]  # fmt: skip

    def guardians(rows: slice) -> list[list[str]]:
        c = np.arange(n_contacts)[rows]
        n = len(c)
        s = roster.contact_student[c]
        first, last = first_names[roster.contact_first[c]], last_names[roster.contact_last[c]]
        email = blank_where(contact_emails(roster, c), ~roster.contact_has_email[c])
        home, cell = contact_phones(roster, c)
        relationship = roster.contact_relationship[c]
        return [
            guardian_ids(c), *_blanks(n, 2),
            ["true"] * n,
            org_ids[pop.school[s]].tolist(),
            pick([r[2] for r in RELATIONSHIPS], relationship),
            [e or g for e, g in zip(email, guardian_ids(c), strict=True)],  # username: OneRoster requires one
            ["{SIS:" + k + "}" for k in contact_ids(c)],
            first.tolist(),
            last.tolist(),
            [""] * n,
            [""] * n,
            email,
            cell,
            home,
            student_ids[s].tolist(),
            *_blanks(n, 2 + len(STUDENT_METADATA)),
            email,
            home,
            cell,  # the seed maps Cell Phone to contact_work_phone
            pick([r[0] for r in RELATIONSHIPS], relationship),
        ]  # fmt: skip

    with out.csv("oneroster__users", extra_columns=METADATA) as csv_out:
        write_blocks(csv_out, pop.n, students)
        write_blocks(csv_out, len(roster.teacher_school), teachers)
        write_blocks(csv_out, n_contacts, guardians)

    section_begin = np.array([clock.day(t.start) for t in terms])[roster.section_term]
    section_end = np.array([clock.day(t.end) for t in terms])[roster.section_term]

    def student_enrollments(rows: slice) -> list[list[str]]:
        k = np.arange(len(roster.enrollment_student))[rows]
        section, s = roster.enrollment_section[k], roster.enrollment_student[k]
        n = len(k)
        return [
            ("enr-" + texts(strs(1 + k))).tolist(), *_blanks(n, 2),
            class_ids[section].tolist(),
            org_ids[roster.section_school[section]].tolist(),
            student_ids[s].tolist(),
            ["student"] * n,
            ["false"] * n,
            clock.iso(roster.enrollment_begin[k]),
            clock.iso(roster.enrollment_end[k]),
        ]  # fmt: skip

    def teacher_enrollments(rows: slice) -> list[list[str]]:
        section = np.arange(len(class_ids))[rows]
        n = len(section)
        return [
            ("enr-t" + texts(section_ids(section))).tolist(), *_blanks(n, 2),
            class_ids[section].tolist(),
            org_ids[roster.section_school[section]].tolist(),
            ("tch-" + texts(teacher_ids(roster.section_teacher[section]))).tolist(),
            ["teacher"] * n,
            ["true"] * n,
            clock.iso(section_begin[section]),
            clock.iso(section_end[section]),
        ]  # fmt: skip

    with out.csv("oneroster__enrollments") as csv_out:
        write_blocks(csv_out, len(roster.enrollment_student), student_enrollments)
        write_blocks(csv_out, len(class_ids), teacher_enrollments)

    rng = rng_for(seed, "demographics")
    hispanic = rng.random(pop.n) < 0.52
    # American Indian, Asian, Black, Pacific Islander, White, two or more: the demographics column order.
    race = rng.choice(6, size=pop.n, p=(0.01, 0.05, 0.13, 0.002, 0.778, 0.03))
    born_abroad = pop.eb & (rng.random(pop.n) < 0.4)

    def demographics(rows: slice) -> list[list[str]]:
        s = np.arange(pop.n)[rows]
        n = len(s)
        r, abroad = race[s], born_abroad[s]
        return [
            student_ids[s].tolist(), *_blanks(n, 2),
            pop.birth_date[s].tolist(),
            flag(pop.female[s], "female", "male"),
            *(_true_false(r == k) for k in range(6)),
            _true_false(hispanic[s]),
            np.where(abroad, "MX", "US").tolist(),
            np.where(abroad, "", "TX").tolist(),
            [""] * n,
            [""] * n,
        ]  # fmt: skip

    with out.csv("oneroster__demographics") as csv_out:
        write_blocks(csv_out, pop.n, demographics)

    return {
        "oneroster_users_guardians": n_contacts,
        "oneroster_users_disabled": int((~pop.active).sum()),
        "oneroster_users_homeless": int(pop.homeless.sum()),
    }
