"""The catalog of every input (SPEC §3): one home for source names, columns and their types.

The generator writes these files, the sandbox serves them, ingest parses them into ``raw``, the pandera
schemas check them and the dbt staging models cast them, all from this one description.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

ColumnType = Literal["text", "date", "datetime", "bool", "int", "decimal"]
LoadMode = Literal["documents", "snapshot"]

# Accepted spellings of booleans and the pattern of each typed column (SPEC §3 "All CSV inputs").
TRUE_VALUES = ("Y", "y", "true", "TRUE", "True", "1")
FALSE_VALUES = ("N", "n", "false", "FALSE", "False", "0")
TYPE_PATTERNS: dict[ColumnType, str] = {
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "datetime": r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$",
    "int": r"^[+-]?\d+$",
    "decimal": r"^[+-]?(\d+(\.\d*)?|\.\d+)$",
}
TYPE_DESCRIPTIONS: dict[ColumnType, str] = {
    "date": "a date (YYYY-MM-DD)",
    "datetime": "an ISO date-time (YYYY-MM-DDTHH:MM:SSZ)",
    "bool": "a boolean (Y/N, true/false, 1/0)",
    "int": "a whole number",
    "decimal": "a number",
    "text": "text",
}


def snake_case(label: str) -> str:
    """`State Province Id` -> `state_province_id`, `sourcedId` -> `sourced_id`, `metadata.x` -> `metadata_x`."""
    label = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", label.strip())
    return re.sub(r"[^0-9a-zA-Z]+", "_", label).strip("_").lower()


@dataclass(frozen=True)
class Column:
    name: str  # exactly as the source spells it (CSV header or API field)
    type: ColumnType = "text"
    required: bool = False

    @property
    def staged_name(self) -> str:
        return snake_case(self.name)


def _cols(spec: str) -> tuple[Column, ...]:
    """Columns from a compact spec: `name:type!` (type defaults to text, `!` marks required)."""
    out = []
    for part in (p.strip() for p in spec.split(",")):
        required = part.endswith("!")
        part = part.rstrip("!")
        name, _, ctype = part.partition(":")
        out.append(Column(name.strip(), (ctype or "text"), required))  # type: ignore[arg-type]
    return tuple(out)


@dataclass(frozen=True)
class Source:
    system: Literal["samegoal", "qmlativ", "powerschool", "oneroster", "campus"]
    table: str
    columns: tuple[Column, ...]
    mode: LoadMode = "snapshot"
    key: tuple[str, ...] = ()  # natural key (source spelling), unique within one district's snapshot
    program: str | None = None  # SameGoal special program whose cutover date governs this form
    record_date: str | None = None  # SameGoal: the date compared with the cutover and keying supersession
    supersession_key: tuple[str, ...] = ()  # SameGoal: columns besides student and record date
    description: str = ""
    filename: str = field(default="")

    @property
    def name(self) -> str:
        """Raw table name and asset key suffix, e.g. `powerschool__students`."""
        return f"{self.system}__{self.table}"

    @property
    def file(self) -> str:
        return self.filename or f"{self.table}.csv"

    @property
    def input_dir_key(self) -> str:
        """The `inputs` key of districts.yaml naming the folder this source is dropped in."""
        return f"{self.system}_dir"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


# --- SameGoal state-reporting export (SPEC §3.1, seed 000) --------------------------------------------
SAMEGOAL_DOCUMENT_STATUSES = ("complete", "draft", "in_review", "voided")
SAMEGOAL_COMMON = _cols(
    "document_id!, document_status!, completed_at:datetime, samegoal_student_id!, student_local_id, "
    "student_state_id, campus_id"
)
SAMEGOAL_FORMS: dict[str, tuple[str, str]] = {
    # form: (special program whose cutover applies, the form's own fields from the seed)
    "special_education_enrollment": (
        "special_education",
        "start_date:date, end_date:date, state_instructional_setting, state_child_count_fund, "
        "multiply_disabled:bool, state_disability",
    ),
    "disability": (
        "special_education",
        "disability_rank:int, state_disability, start_date:date, end_date:date",
    ),
    "program_related_service": (
        "special_education",
        "start_date:date, end_date:date, program_and_related_service_type, "
        "state_program_and_related_service_type, state_ppcd_service_location_code_description, "
        "state_interpreting_services_type_code_description, district_of_rdspd_service",
    ),
    "child_find": (
        "child_find",
        "start_date:date, end_date:date, parental_consent_date:date, initial_evaluation_date:date, "
        "eci_notification_date:date, eci_transition_conference_date:date, "
        "eligibility_determination_date:date, determined_eligible:bool, evaluation_delay_reason, "
        "eligibility_delay_reason, out_of_district_evaluation:bool, campus_id_of_evaluation_override, "
        "entity_of_evaluation, student_absences_within_timeframe:int",
    ),
    "language_acquisition": (
        "language_acquisition",
        "start_date:date, end_date:date, preferred_home_communication_method, "
        "language_acquisition_services_provided, frequency_of_services, hours_spent_receiving_services:decimal, "
        "hearing_amplification_type, hearing_amplification_access_period_of_time, "
        "hearing_amplification_average_daily_use, tool_or_assessment_used, assessment_results_obtained",
    ),
    "restraint": (
        "restraint",
        "restraint_date:date, campus_id_of_restraint, state_restraint_reason, state_restraint_staff_type, "
        "non_membership_discipline_restraint:bool",
    ),
    "dyslexia": ("dyslexia", "start_date:date, end_date:date, state_dyslexia_services_codes"),
    "section_504": ("section_504", "iap_begin_date:date, no_longer_section_504:bool, dismissal_date:date"),
    "intervention_strategy": (
        "intervention_strategy",
        "start_date:date, end_date:date, intervention_strategy_indicator",
    ),
    "emergent_bilingual": (
        "emergent_bilingual",
        "home_language, home_language_survey_date_administered:date, entered_district_as_eb_monitored:bool, "
        "start_date:date, end_date:date, state_parental_permission, eb:bool, state_bilingual_program_type, "
        "state_esl_program_type",
    ),
}
# The date that places a SameGoal document in time, where it is not `start_date`.
SAMEGOAL_RECORD_DATES = {"restraint": "restraint_date", "section_504": "iap_begin_date"}
# A later complete document supersedes an earlier one for the same student, form and start date (SPEC
# §3.1). Where a student rightly has several at once, the column telling them apart joins the key, so
# a secondary disability or a second service starting the same day is never taken for a replacement.
SAMEGOAL_SUPERSESSION_EXTRA = {
    "disability": ("disability_rank",),
    "program_related_service": ("program_and_related_service_type",),
}
SAMEGOAL_PROGRAMS = (
    "special_education",
    "child_find",
    "restraint",
    "language_acquisition",
    "dyslexia",
    "section_504",
    "intervention_strategy",
    "emergent_bilingual",
)

SOURCES: tuple[Source, ...] = (
    *(
        Source(
            "samegoal",
            form,
            SAMEGOAL_COMMON + _cols(fields),
            mode="documents",
            key=("document_id",),
            program=program,
            record_date=SAMEGOAL_RECORD_DATES.get(form, "start_date"),
            supersession_key=SAMEGOAL_SUPERSESSION_EXTRA.get(form, ()),
            description=f"SameGoal state-reporting export, form `{form}` (one row per document version).",
        )
        for form, (program, fields) in SAMEGOAL_FORMS.items()
    ),
    # --- Qmlativ demographics: the student id mapping (SPEC §3.2) ---
    Source(
        "qmlativ",
        "students",
        _cols(
            "StudentID:int!, NameID:int, StudentNumber, StateID, FirstName, LastName, BirthDate:date, "
            "EntityID:int"
        ),
        key=("StudentID",),
        description="Qmlativ student objects: maps SameGoal students to Qmlativ StudentID.",
    ),
    # --- PowerSchool export (SPEC §3.3, seed 001 §2.1) ---
    Source(
        "powerschool",
        "students",
        _cols(
            "Local Id!, State Province Id, First Name, Middle Name, Last Name, Grade Level, School Number, "
            "Enroll Status:int, Email, Gender, Birth Date:date, Street, City, State, Postal Code, Home Room, "
            "Alert Other, Alert Other Expires, Doctor Phone, Alert MedicalExpires, Alert Guardian, "
            "Alert Medical, Doctor Name"
        ),
        key=("Local Id",),
        description="PowerSchool students, with the alert/doctor fields repurposed for homeless metadata.",
    ),
    Source(
        "powerschool",
        "contacts",
        _cols(
            "Contact Id!, Student Local Id!, First Name, Last Name, Contact Email, Contact Phone, Cell Phone, "
            "Contact Relationship"
        ),
        key=("Contact Id", "Student Local Id"),
        description="PowerSchool student contacts (guardians and parents).",
    ),
    Source(
        "powerschool",
        "schools",
        _cols("School Number!, School Name, District Number, District Name"),
        key=("School Number",),
    ),
    Source(
        "powerschool",
        "teachers",
        _cols("Teacher Id!, First Name, Last Name, Email, School Number"),
        key=("Teacher Id",),
    ),
    Source(
        "powerschool",
        "terms",
        _cols("Term Id!, Name, Start Date:date, End Date:date, School Year:int"),
        key=("Term Id",),
    ),
    Source(
        "powerschool",
        "sections",
        _cols("Section Id!, Course Number, Course Name, School Number, Term Id, Teacher Id, Period"),
        key=("Section Id",),
    ),
    Source(
        "powerschool",
        "enrollments",
        _cols("Section Id!, Student Local Id!, Start Date:date, End Date:date"),
        key=("Section Id", "Student Local Id"),
    ),
    # --- OneRoster 1.1 bundle from another SIS (seed 001 §2.2); users may carry metadata.* columns ---
    Source("oneroster", "manifest", _cols("propertyName!, value"), key=("propertyName",)),
    Source(
        "oneroster",
        "orgs",
        _cols("sourcedId!, status, dateLastModified:datetime, name, type, identifier, parentSourcedId"),
        key=("sourcedId",),
    ),
    Source(
        "oneroster",
        "academicSessions",
        _cols(
            "sourcedId!, status, dateLastModified:datetime, title, type, startDate:date, endDate:date, "
            "parentSourcedId, schoolYear:int"
        ),
        key=("sourcedId",),
    ),
    Source(
        "oneroster",
        "courses",
        _cols(
            "sourcedId!, status, dateLastModified:datetime, schoolYearSourcedId, title, courseCode, grades, "
            "orgSourcedId, subjects, subjectCodes"
        ),
        key=("sourcedId",),
    ),
    Source(
        "oneroster",
        "classes",
        _cols(
            "sourcedId!, status, dateLastModified:datetime, title, grades, courseSourcedId, classCode, "
            "classType, location, schoolSourcedId, termSourcedIds, subjects, subjectCodes, periods"
        ),
        key=("sourcedId",),
    ),
    Source(
        "oneroster",
        "users",
        _cols(
            "sourcedId!, status, dateLastModified:datetime, enabledUser:bool, orgSourcedIds, role, username, "
            "userIds, givenName, familyName, middleName, identifier, email, sms, phone, agentSourcedIds, "
            "grades, password"
        ),
        key=("sourcedId",),
        description="OneRoster users; `metadata.*` extension columns are kept in `extra_columns`.",
    ),
    Source(
        "oneroster",
        "enrollments",
        _cols(
            "sourcedId!, status, dateLastModified:datetime, classSourcedId, schoolSourcedId, userSourcedId, "
            "role, primary:bool, beginDate:date, endDate:date"
        ),
        key=("sourcedId",),
    ),
    Source(
        "oneroster",
        "demographics",
        _cols(
            "sourcedId!, status, dateLastModified:datetime, birthDate:date, sex, americanIndianOrAlaskaNative:bool, "
            "asian:bool, blackOrAfricanAmerican:bool, nativeHawaiianOrOtherPacificIslander:bool, white:bool, "
            "demographicRaceTwoOrMoreRaces:bool, hispanicOrLatinoEthnicity:bool, countryOfBirthCode, "
            "stateOfBirthAbbreviation, cityOfBirth, publicSchoolResidenceStatus"
        ),
        key=("sourcedId",),
    ),
    # --- SIS extracts for Ed-Fi (SPEC §3.4, seed 002) ---
    Source(
        "campus",
        "schools",
        _cols("school_id!, state_school_number, name, state_exclude:bool"),
        key=("school_id",),
    ),
    Source(
        "campus",
        "calendars",
        _cols("calendar_id!, school_id, school_year:int, state_exclude:bool"),
        key=("calendar_id",),
    ),
    Source(
        "campus",
        "school_years",
        _cols("school_year:int!, start_date:date, end_date:date"),
        key=("school_year",),
    ),
    Source(
        "campus",
        "persons",
        _cols("person_id!, edfi_id, student_number, first_name, last_name"),
        key=("person_id",),
    ),
    Source(
        "campus",
        "enrollments",
        _cols("enrollment_id!, person_id, calendar_id, start_date:date, end_date:date, no_show:bool"),
        key=("enrollment_id",),
    ),
    Source(
        "campus",
        "test_accommodations",
        _cols(
            "accommodation_id!, person_id, assessment, subject, accommodation, start_date:date, end_date:date, "
            "modified_at:datetime"
        ),
        key=("accommodation_id",),
    ),
)

SOURCES_BY_NAME: dict[str, Source] = {s.name: s for s in SOURCES}
SAMEGOAL_SOURCES: tuple[Source, ...] = tuple(s for s in SOURCES if s.program)  # one per Qmlativ screen
