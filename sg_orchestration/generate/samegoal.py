"""SameGoal state-reporting export (SPEC §3.1, seed 000): one CSV per form, one row per document."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from sg_orchestration.catalog import SAMEGOAL_FORMS, SOURCES_BY_NAME
from sg_orchestration.generate.common import (
    Clock,
    Output,
    at_least,
    blank_where,
    choose,
    flag,
    pick,
    rng_for,
    strs,
    texts,
)
from sg_orchestration.generate.population import DISABILITIES, HEARING, TX_DISTRICT, Population

# State code values written into the forms, by TEDS code table. The dbt code-table seeds must hold them.
INSTRUCTIONAL_SETTINGS = ("40", "41", "42", "43", "44", "00", "01", "45", "08")  # C035
_SETTING_SHARE = (0.30, 0.25, 0.12, 0.08, 0.12, 0.08, 0.01, 0.03, 0.01)
CHILD_COUNT_FUNDS = ("1", "2", "4")  # C066: school age, preschool, state only
RELATED_SERVICES = (  # district service name, C178-style state code
    ("Occupational Therapy", "04"),
    ("Physical Therapy", "06"),
    ("Counseling Services", "02"),
    ("Special Transportation", "11"),
    ("Psychological Services", "07"),
    ("School Health Services", "09"),
    ("Assistive Technology", "13"),
    ("Audiological Services", "01"),
    ("Orientation and Mobility", "05"),
)
_SERVICE_SHARE = (0.28, 0.12, 0.2, 0.15, 0.08, 0.06, 0.06, 0.03, 0.02)
PPCD_LOCATIONS = ("01", "02", "03", "04", "05")
INTERPRETING_SERVICES = ("01", "02", "03", "04")  # C174
EVALUATION_DELAY_REASONS = ("01", "02", "03", "04", "05")  # C347
ELIGIBILITY_DELAY_REASONS = ("01", "02", "03")  # C348
COMMUNICATION_METHODS = ("01", "02", "03", "04")
ACQUISITION_SERVICES = ("01", "02", "03")
SERVICE_FREQUENCIES = ("Daily", "Weekly", "Monthly")
AMPLIFICATION_TYPES = ("00", "01", "02", "03")
AMPLIFICATION_PERIODS = ("01", "02", "03")
AMPLIFICATION_DAILY_USE = ("01", "02", "03", "04")
LANGUAGE_TOOLS = ("Cottage Acquisition Scales", "Auditory Skills Checklist, Ling Six Sound Test", "SKI-HI")
LANGUAGE_RESULTS = ("Within expected range", "Below expected range", "Above expected range")
RESTRAINT_REASONS = ("01", "02", "03")  # C173
RESTRAINT_STAFF = ("01", "02", "03", "04")  # C194
DYSLEXIA_SERVICES = ("01", "02", "03")
HOME_LANGUAGES = ("spa", "vie", "ara", "urd", "zho", "prs", "swa", "kor")  # C092
_HOME_LANGUAGE_SHARE = (0.78, 0.06, 0.04, 0.03, 0.03, 0.02, 0.02, 0.02)
PERMISSIONS_ELEMENTARY = ("D", "A", "B", "C")  # C093, grades PK-8
PERMISSIONS_SECONDARY = ("F", "C")  # C093, grades 9-12
BILINGUAL_PROGRAMS = ("2", "3", "4", "5")  # C175
ESL_PROGRAMS = ("2", "3")  # C176
NOT_PARTICIPATING = "0"  # C175 / C176
# One value per table that is NOT in it: the validation error "code not in its table" must have a case.
UNKNOWN_CODES = {"special_education_enrollment": ("state_instructional_setting", "47")}

STATUSES = ("complete", "draft", "in_review", "voided")
_LATEST_STATUS_SHARE = (0.85, 0.06, 0.05, 0.04)  # work in progress is on a student's newest document
_OLDER_STATUS_SHARE = (0.95, 0.0, 0.0, 0.05)
# The field that dates a document (its "start date" for supersession and the cutover rule).
DATE_FIELDS = {"restraint": "restraint_date", "section_504": "iap_begin_date"}


def date_field(form: str) -> str:
    return DATE_FIELDS.get(form, "start_date")


def cutover_dates(clock: Clock) -> dict[str, date | None]:
    """Per program: most integrate from two school years back, some later, intervention strategy never."""
    y = clock.year
    return {
        "special_education": date(y - 2, 8, 1),
        "child_find": date(y - 2, 8, 1),
        "restraint": date(y - 2, 8, 1),
        "language_acquisition": date(y - 2, 8, 1),
        "dyslexia": date(y - 1, 1, 15),
        "section_504": date(y - 1, 1, 15),
        "intervention_strategy": None,
        "emergent_bilingual": date(y - 1, 8, 1),
    }


@dataclass
class _Documents:
    """One form's documents before the common columns are added."""

    student: np.ndarray  # population index
    day: np.ndarray  # the document's date (see DATE_FIELDS) as an offset from as_of
    latest: np.ndarray  # the student's newest document of this form
    fields: dict[str, list[str]]  # the form's own columns, by catalog name
    ready: np.ndarray | None = None  # the day the document can be completed, when later than `day`


def _distinct_days(student: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Moves a document that shares its student and date with another back a day or more.

    Two complete documents of one student, form and date read as a supersession, so only the deliberate
    superseding documents may share a date.
    """
    order = np.lexsort((-day, student))  # each student's documents, newest first
    s, d = student[order], day[order]
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]])
    position = np.arange(len(s)) - np.searchsorted(s, s)
    # Strictly decreasing d within a group is a non-increasing d + position; a group offset larger than
    # any day restarts the running minimum at each student.
    offset = group * (1 << 40)
    distinct = np.minimum.accumulate(d + position - offset) + offset - position
    out = np.empty_like(day)
    out[order] = distinct
    return out


class _Forms:
    """Builds each form's documents from the population."""

    def __init__(self, pop: Population, seed: int):
        self.pop, self.seed, self.clock = pop, seed, pop.clock
        rng = rng_for(seed, "samegoal disabilities")
        sped = pop.sped
        second = at_least(rng, sped & (rng.random(pop.n) < 0.35), 2, sped)
        third = at_least(rng, second & (rng.random(pop.n) < 0.2), 1, second)
        self.ranks = sped.astype(np.int64) + second + third
        # Distinct secondary and tertiary codes: offsets a and a + b from the primary, with a + b < len.
        a = rng.integers(1, len(DISABILITIES) - 1, size=pop.n)
        b = 1 + (rng.random(pop.n) * (len(DISABILITIES) - 1 - a)).astype(np.int64)
        offsets = np.stack([np.zeros(pop.n, dtype=np.int64), a, a + b])
        self.codes = (pop.disability + offsets) % len(DISABILITIES)  # [rank - 1, student]
        self.multiply_disabled = (self.ranks >= 2) & (rng.random(pop.n) < 0.3)
        self.sped_since = self._days_back(rng, np.arange(pop.n), 2500)

    def _days_back(self, rng: np.random.Generator, student: np.ndarray, most: int) -> np.ndarray:
        """A day in the last `most` days, and never before the student entered the district."""
        span = np.clip(-self.pop.entry[student], 0, most)
        return -(rng.random(len(student)) * span).astype(np.int64)

    def _versions(
        self, rng: np.random.Generator, members: np.ndarray, count_share: tuple[float, ...], period: int = 365
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Documents renewed every `period` days, the newest within the last period, none before entry."""
        students = np.flatnonzero(members)
        newest = self._days_back(rng, students, period)
        # As many versions as school years in the district at most; counted in years, not days from
        # as_of, so that as_of moves dates but never adds or drops a document.
        room = 1 + self.pop.years_here[students]
        k = np.minimum(rng.choice(len(count_share), size=len(students), p=count_share) + 1, room)
        student = np.repeat(students, k)
        age = np.arange(len(student)) - np.repeat(np.cumsum(k) - k, k)  # 0 = the newest
        day = np.repeat(newest, k) - period * age + rng.integers(-10, 11, size=len(student))
        day = _distinct_days(student, np.clip(day, np.minimum(self.pop.entry[student], 0), 0))
        return student, day, age == 0

    def build(self, form: str) -> _Documents:
        return getattr(self, f"_{form}")(rng_for(self.seed, f"samegoal {form}"))

    def _ends(
        self, rng: np.random.Generator, day: np.ndarray, latest: np.ndarray, exits: float | np.ndarray
    ) -> list[str]:
        """An older document ran until the next one; the newest is open unless the student exited.

        `exits` is the share of newest documents closed by an exit, or the exits themselves.
        """
        exited = latest & (rng.random(len(day)) < exits if isinstance(exits, float) else exits)
        end = np.where(exited, day + (rng.random(len(day)) * -day).astype(np.int64), day + 364)
        return self.clock.iso(end, blank=latest & ~exited)

    def _special_education_enrollment(self, rng: np.random.Generator) -> _Documents:
        pop = self.pop
        student, day, latest = self._versions(rng, pop.sped, (0.4, 0.3, 0.3))
        n = len(student)
        fund = np.where(pop.grade[student] < 0, 1, np.where(rng.random(n) < 0.03, 2, 0))
        return _Documents(student, day, latest, {
            "start_date": self.clock.iso(day),
            "end_date": self._ends(rng, day, latest, 0.05),
            "state_instructional_setting": choose(rng, INSTRUCTIONAL_SETTINGS, n, _SETTING_SHARE),
            "state_child_count_fund": pick(CHILD_COUNT_FUNDS, fund),
            "multiply_disabled": flag(self.multiply_disabled[student]),
            "state_disability": pick(DISABILITIES, pop.disability[student]),
        })  # fmt: skip

    def _disability(self, rng: np.random.Generator) -> _Documents:
        rank = np.concatenate([np.full(int((self.ranks >= r).sum()), r) for r in (1, 2, 3)])
        student = np.concatenate([np.flatnonzero(self.ranks >= r) for r in (1, 2, 3)])
        day = self.sped_since[student] + np.where(rank > 1, rng.integers(0, 400, size=len(student)), 0)
        day = _distinct_days(student, np.minimum(day, 0))
        single = np.ones(len(student), dtype=bool)
        return _Documents(student, day, single, {
            "disability_rank": strs(rank),
            "state_disability": pick(DISABILITIES, self.codes[rank - 1, student]),
            "start_date": self.clock.iso(day),
            "end_date": self._ends(rng, day, single, 0.03),
        })  # fmt: skip

    def _program_related_service(self, rng: np.random.Generator) -> _Documents:
        pop = self.pop
        served = at_least(rng, pop.sped & (rng.random(pop.n) < 0.7), 4, pop.sped)
        k = np.where(served, rng.choice(3, size=pop.n, p=(0.57, 0.29, 0.14)) + 1, 0)
        student = np.repeat(np.arange(pop.n), k)
        n = len(student)
        day = _distinct_days(student, self._days_back(rng, student, 700))
        service = rng.choice(len(RELATED_SERVICES), size=n, p=_SERVICE_SHARE)
        hearing = np.isin(pop.disability[student], [DISABILITIES.index(c) for c in HEARING])
        single = np.ones(n, dtype=bool)
        return _Documents(student, day, single, {
            "start_date": self.clock.iso(day),
            "end_date": self._ends(rng, day, single, 0.1),
            "program_and_related_service_type": pick([s[0] for s in RELATED_SERVICES], service),
            "state_program_and_related_service_type": pick([s[1] for s in RELATED_SERVICES], service),
            "state_ppcd_service_location_code_description": blank_where(
                choose(rng, PPCD_LOCATIONS, n), pop.grade[student] >= 0
            ),
            "state_interpreting_services_type_code_description": blank_where(
                choose(rng, INTERPRETING_SERVICES, n), ~hearing
            ),
            "district_of_rdspd_service": blank_where([TX_DISTRICT] * n, ~hearing),
        })  # fmt: skip

    def _child_find(self, rng: np.random.Generator) -> _Documents:
        pop, clock = self.pop, self.clock
        student = np.flatnonzero(pop.child_find)
        n = len(student)
        # Which evaluations are still under way is drawn, not read off the dates, so as_of only moves dates.
        pending = at_least(rng, rng.random(n) < 0.15, 1)  # eligibility not determined yet
        pending_eval = pending & (rng.random(n) < 0.6)  # not even evaluated yet
        consent_gap, evaluation_gap = rng.integers(0, 10, size=n), rng.integers(20, 75, size=n)
        eligibility_gap = rng.integers(5, 35, size=n)
        # The timeline hangs off its latest step: eligibility, or the evaluation or consent still pending.
        latest_step = np.where(pending, -rng.integers(0, 40, size=n), self._days_back(rng, student, 700))
        eligibility = latest_step
        evaluation = np.where(pending & ~pending_eval, latest_step, eligibility - eligibility_gap)
        consent = np.where(pending_eval, latest_step, evaluation - evaluation_gap)
        day = consent - consent_gap  # the referral
        early = pop.grade[student] < 0
        eci = early & (rng.random(n) < 0.6)
        return _Documents(student, day, np.ones(n, dtype=bool), {
            "start_date": clock.iso(day),
            "end_date": clock.iso(eligibility, blank=pending),
            "parental_consent_date": clock.iso(consent),
            "initial_evaluation_date": clock.iso(evaluation, blank=pending_eval),
            "eci_notification_date": clock.iso(day - 90, blank=~eci),
            "eci_transition_conference_date": clock.iso(day - 30, blank=~eci),
            "eligibility_determination_date": clock.iso(eligibility, blank=pending),
            "determined_eligible": blank_where(flag(pop.sped[student]), pending),
            "evaluation_delay_reason": blank_where(
                choose(rng, EVALUATION_DELAY_REASONS, n), pending_eval | (evaluation_gap <= 60)
            ),
            "eligibility_delay_reason": blank_where(
                choose(rng, ELIGIBILITY_DELAY_REASONS, n), pending | (eligibility_gap <= 30)
            ),
            "out_of_district_evaluation": flag(rng.random(n) < 0.03),
            "campus_id_of_evaluation_override": blank_where(pop.campus_id[student].tolist(), rng.random(n) > 0.05),
            "entity_of_evaluation": blank_where([TX_DISTRICT] * n, rng.random(n) > 0.1),
            "student_absences_within_timeframe": strs(rng.poisson(1.5, size=n)),
        }, ready=latest_step)  # fmt: skip

    def _language_acquisition(self, rng: np.random.Generator) -> _Documents:
        pop = self.pop
        hearing = pop.sped & np.isin(pop.disability, [DISABILITIES.index(c) for c in HEARING])
        student, day, latest = self._versions(rng, hearing, (0.6, 0.4))
        n = len(student)
        return _Documents(student, day, latest, {
            "start_date": self.clock.iso(day),
            "end_date": self._ends(rng, day, latest, 0.05),
            "preferred_home_communication_method": choose(rng, COMMUNICATION_METHODS, n),
            "language_acquisition_services_provided": choose(rng, ACQUISITION_SERVICES, n),
            "frequency_of_services": choose(rng, SERVICE_FREQUENCIES, n, (0.3, 0.6, 0.1)),
            "hours_spent_receiving_services": [f"{h:.1f}" for h in rng.integers(1, 20, size=n) / 2],
            "hearing_amplification_type": choose(rng, AMPLIFICATION_TYPES, n),
            "hearing_amplification_access_period_of_time": choose(rng, AMPLIFICATION_PERIODS, n),
            "hearing_amplification_average_daily_use": choose(rng, AMPLIFICATION_DAILY_USE, n),
            "tool_or_assessment_used": choose(rng, LANGUAGE_TOOLS, n),
            "assessment_results_obtained": choose(rng, LANGUAGE_RESULTS, n),
        })  # fmt: skip

    def _restraint(self, rng: np.random.Generator) -> _Documents:
        pop = self.pop
        k = np.where(pop.restraint, rng.choice(4, size=pop.n, p=(0.55, 0.25, 0.12, 0.08)) + 1, 0)
        student = np.repeat(np.arange(pop.n), k)
        n = len(student)
        day = _distinct_days(student, self._days_back(rng, student, 700))
        return _Documents(student, day, np.ones(n, dtype=bool), {
            "restraint_date": self.clock.iso(day),
            "campus_id_of_restraint": pop.campus_id[student].tolist(),
            "state_restraint_reason": choose(rng, RESTRAINT_REASONS, n, (0.3, 0.6, 0.1)),
            "state_restraint_staff_type": choose(rng, RESTRAINT_STAFF, n, (0.1, 0.1, 0.05, 0.75)),
            "non_membership_discipline_restraint": flag(rng.random(n) < 0.05),
        })  # fmt: skip

    def _dyslexia(self, rng: np.random.Generator) -> _Documents:
        student, day, latest = self._versions(rng, self.pop.dyslexia, (0.6, 0.4))
        return _Documents(student, day, latest, {
            "start_date": self.clock.iso(day),
            "end_date": self._ends(rng, day, latest, 0.05),
            "state_dyslexia_services_codes": choose(rng, DYSLEXIA_SERVICES, len(student), (0.6, 0.3, 0.1)),
        })  # fmt: skip

    def _section_504(self, rng: np.random.Generator) -> _Documents:
        student, day, latest = self._versions(rng, self.pop.section_504, (0.6, 0.4))
        n = len(student)
        dismissed = latest & (rng.random(n) < 0.08)
        dismissal = day + (rng.random(n) * -day).astype(np.int64)
        return _Documents(student, day, latest, {
            "iap_begin_date": self.clock.iso(day),
            "no_longer_section_504": flag(dismissed),
            "dismissal_date": self.clock.iso(dismissal, blank=~dismissed),
        })  # fmt: skip

    def _intervention_strategy(self, rng: np.random.Generator) -> _Documents:
        student, day, latest = self._versions(rng, self.pop.intervention, (0.7, 0.3))
        return _Documents(student, day, latest, {
            "start_date": self.clock.iso(day),
            "end_date": self._ends(rng, day, latest, 0.1),
            "intervention_strategy_indicator": ["1"] * len(student),
        })  # fmt: skip

    def _emergent_bilingual(self, rng: np.random.Generator) -> _Documents:
        pop = self.pop
        student, day, latest = self._versions(rng, pop.eb, (0.4, 0.3, 0.3))
        n = len(student)
        grade = pop.grade[student]
        reclassified = latest & (rng.random(n) < 0.08)
        secondary = grade >= 9
        permission = np.where(
            secondary,
            pick(PERMISSIONS_SECONDARY, rng.choice(2, size=n, p=(0.92, 0.08))),
            pick(PERMISSIONS_ELEMENTARY, rng.choice(4, size=n, p=(0.55, 0.15, 0.25, 0.05))),
        )
        bilingual = permission == "D"
        esl = np.isin(permission, ["A", "B", "F"])
        return _Documents(student, day, latest, {
            "home_language": choose(rng, HOME_LANGUAGES, n, _HOME_LANGUAGE_SHARE),
            "home_language_survey_date_administered": self.clock.iso(pop.entry[student]),
            "entered_district_as_eb_monitored": flag(rng.random(n) < 0.04),
            "start_date": self.clock.iso(day),
            "end_date": self._ends(rng, day, latest, reclassified),
            "state_parental_permission": permission.tolist(),
            "eb": flag(~reclassified),
            "state_bilingual_program_type": np.where(
                bilingual, choose(rng, BILINGUAL_PROGRAMS, n), NOT_PARTICIPATING
            ).tolist(),
            "state_esl_program_type": np.where(esl, choose(rng, ESL_PROGRAMS, n), NOT_PARTICIPATING).tolist(),
        })  # fmt: skip


def write_samegoal(out: Output, pop: Population, seed: int) -> dict[str, int]:
    """Writes the ten form files; returns the count of each case the downstream rules must handle."""
    forms = _Forms(pop, seed)
    local_ids = pop.local_id.copy()
    local_ids[pop.local_id_blank] = ""
    local_ids[pop.local_id_stale] = "9" + local_ids[pop.local_id_stale]  # an id from before a SIS renumbering
    people = {
        "samegoal_student_id": pop.samegoal_id,
        "student_local_id": local_ids,
        "student_state_id": pop.state_id,
        "campus_id": pop.campus_id,
    }
    cutovers = cutover_dates(pop.clock)
    cases: dict[str, int] = {}
    for number, (form, (program, _)) in enumerate(SAMEGOAL_FORMS.items(), start=1):
        rng = rng_for(seed, f"samegoal {form} documents")
        columns, counts = _export_rows(
            rng, pop.clock, number, form, forms.build(form), people, cutovers[program]
        )
        source = SOURCES_BY_NAME[f"samegoal__{form}"]
        with out.csv(source.name) as csv_out:
            csv_out.write([columns[name] for name in source.column_names])
        for case, count in counts.items():
            cases[case] = cases.get(case, 0) + count
    cases["samegoal_students_missing_from_qmlativ"] = int(pop.missing_from_qmlativ.sum())
    cases["samegoal_students_local_id_blank"] = int(pop.local_id_blank.sum())
    cases["samegoal_students_local_id_stale"] = int(pop.local_id_stale.sum())
    return cases


def _export_rows(
    rng: np.random.Generator,
    clock: Clock,
    number: int,
    form: str,
    docs: _Documents,
    people: dict[str, np.ndarray],
    cutover: date | None,
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """A form's export rows: statuses, completion times, ids, and the superseding documents at the end."""
    n = len(docs.student)
    status = np.where(
        docs.latest,
        rng.choice(len(STATUSES), size=n, p=_LATEST_STATUS_SHARE),
        rng.choice(len(STATUSES), size=n, p=_OLDER_STATUS_SHARE),
    )
    status[rng.permutation(n)[: len(STATUSES)]] = np.arange(
        len(STATUSES)
    )  # each status, however small the form
    complete = status == 0
    ready = docs.day if docs.ready is None else docs.ready
    # Completed before the as-of day: the export is read on that day, so nothing is completed later than it.
    done_day = np.minimum(ready + rng.integers(0, 15, size=n), -1)
    done_second = rng.integers(13 * 3600, 22 * 3600, size=n)  # office hours in Texas, as UTC

    unknown = np.zeros(n, dtype=bool)
    if form in UNKNOWN_CODES:
        column, code = UNKNOWN_CODES[form]
        unknown = at_least(rng, complete & (rng.random(n) < 0.003), 1, complete)
        docs.fields[column] = np.where(unknown, code, texts(docs.fields[column])).tolist()

    # Supersession: a later complete document for the same student, form and date, under a new id.
    earlier = np.flatnonzero(at_least(rng, complete & (rng.random(n) < 0.015), 1, complete))
    later_day = np.minimum(done_day[earlier] + rng.integers(1, 31, size=len(earlier)), -1)
    later_second = np.where(
        later_day == done_day[earlier],
        done_second[earlier] + 3600,
        rng.integers(13 * 3600, 22 * 3600, size=len(earlier)),
    )
    # Student by student, then the superseding documents: never ordered by a date, so that a document
    # id keeps its student whatever the as_of.
    rows = np.concatenate([np.arange(n), earlier])
    columns = {name: values[docs.student[rows]].tolist() for name, values in people.items()}
    columns |= {name: texts(values)[rows].tolist() for name, values in docs.fields.items()}
    columns["document_id"] = strs(number * 10_000_000 + 1 + np.arange(len(rows)))
    columns["document_status"] = pick(STATUSES, status[rows])
    columns["completed_at"] = clock.stamp(
        np.concatenate([done_day, later_day]),
        np.concatenate([done_second, later_second]),
        blank=status[rows] != 0,
    )

    day = docs.day[rows]
    counts = {
        "samegoal_documents_draft": int((status == 1).sum()),
        "samegoal_documents_in_review": int((status == 2).sum()),
        "samegoal_documents_voided": int((status == 3).sum()),
        "samegoal_documents_superseded": len(earlier),
        "samegoal_documents_before_cutover": 0 if cutover is None else int((day < clock.day(cutover)).sum()),
        "samegoal_documents_program_not_integrated": len(rows) if cutover is None else 0,
        "samegoal_documents_unknown_state_code": int(unknown.sum()),
    }
    if form == "disability":
        ranks = np.asarray(columns["disability_rank"])
        counts |= {f"samegoal_disability_rank_{r}": int((ranks == str(r)).sum()) for r in (1, 2, 3)}
    return columns, counts
