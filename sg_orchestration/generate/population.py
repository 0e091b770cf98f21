"""The one student population (and its schools) that every generated file describes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from sg_orchestration.generate.common import Clock, at_least, rng_for, spread, strs, texts

TX_DISTRICT = "057999"  # the county-district number of the synthetic Texas district
DISTRICT_NAME = "Demo Independent School District"
EDFI_DISTRICT_NUMBER = "5375"
QMLATIV_ENTITY_ID = 2  # deliberately not 1, so code that assumes the default entity is caught


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(","))


FIRST_F = _names(
    "Sofia, Isabella, Camila, Valentina, Emma, Olivia, Ava, Mia, Amelia, Evelyn, Harper, Abigail, Emily, "
    "Elizabeth, Mila, Ella, Avery, Scarlett, Victoria, Madison, Luna, Grace, Chloe, Penelope, Layla, "
    "Riley, Zoey, Nora, Lily, Eleanor, Ximena, Guadalupe, Maria, Daniela, Natalia, Aaliyah, Jasmine, "
    "Nevaeh, Mai, Linh"
)
FIRST_M = _names(
    "Santiago, Mateo, Sebastian, Diego, Liam, Noah, Oliver, Elijah, James, William, Benjamin, Lucas, "
    "Henry, Alexander, Jackson, Levi, Daniel, Michael, Aiden, Carter, Owen, Wyatt, John, Jack, Luke, "
    "Jayden, Dylan, Grayson, Isaac, Gabriel, Jose, Juan, Luis, Carlos, Miguel, Angel, Jesus, DeShawn, "
    "Minh, Omar"
)
LAST = _names(
    "Garcia, Martinez, Hernandez, Lopez, Gonzalez, Rodriguez, Perez, Sanchez, Ramirez, Torres, Flores, "
    "Rivera, Gomez, Diaz, Reyes, Morales, Cruz, Ortiz, Gutierrez, Chavez, Smith, Johnson, Williams, "
    "Brown, Jones, Miller, Davis, Wilson, Anderson, Thomas, Taylor, Moore, Jackson, Martin, Lee, "
    "Thompson, White, Harris, Clark, Lewis, Robinson, Walker, Young, Allen, King, Wright, Scott, Green, "
    "Baker, Adams, Nguyen, Tran, Le, Pham, Khan, Ali, Patel, O'Brien, Washington, De La Cruz"
)
PLACES = _names(
    "Bluebonnet, Pecan Grove, Live Oak, Cedar Ridge, Mesquite Trail, Brazos, Pedernales, Lone Star, "
    "Guadalupe, San Jacinto, Travis, Bowie, Crockett, Austin, Houston, Lamar, Rusk, Navarro, Seguin, "
    "Zavala, Jordan, Richards, Hobby, Kilby, Nimitz, Rayburn, Johnson, Bush, Hill Country, Prairie View, "
    "Blackland, Post Oak, Red Oak, Willow Creek, Onion Creek, Llano"
)

# Grades are PowerSchool's numbers: -1 = PK, 0 = K, 1..12.
GRADES = np.arange(-1, 13)
_GRADE_SHARE = np.array([0.04, 0.075, *([0.07375] * 12)])
# TEDS C053 disability codes with their approximate share of special-education students.
DISABILITIES = ("08", "09", "10", "02", "07", "06", "14", "03", "04", "01", "13", "05")
_DISABILITY_SHARE = (0.30, 0.18, 0.14, 0.15, 0.05, 0.06, 0.03, 0.055, 0.015, 0.01, 0.008, 0.002)
HEARING = ("03", "05")  # auditory impairment, deaf-blind: the students with a language-acquisition form
# PowerSchool `Alert Medical` texts; the population's `medical` indexes them (0 = none). The second one
# holds a comma and a line break, so the CSV must quote it.
MEDICAL_ALERTS = (
    "",
    "Severe peanut allergy, EpiPen in nurse's office\nAsthma: inhaler in backpack",
    "Type 1 diabetes",
    "Seizure disorder",
    "Asthma",
    "Bee sting allergy",
)

_BANDS = (  # band, lowest grade, highest grade, students per school
    ("high", 9, 12, 1800),
    ("middle", 6, 8, 900),
    ("elementary", -1, 5, 550),
)


@dataclass(frozen=True)
class School:
    index: int
    number: str  # PowerSchool School Number = the three-digit Texas campus number
    name: str
    band: str  # elementary, middle, high, daep
    low: int
    high: int
    in_number: str  # four-digit Indiana state school number (campus extracts for Ed-Fi)

    @property
    def campus_id(self) -> str:
        """The nine-digit Texas campus id SameGoal reports: county-district number + campus number."""
        return TX_DISTRICT + self.number

    @property
    def secondary(self) -> bool:
        return self.low >= 6


def _schools(n: int) -> tuple[School, ...]:
    schools: list[School] = []
    for band, low, high, size in _BANDS:
        share = _GRADE_SHARE[low + 1 : high + 2].sum()
        for k in range(max(1, round(n * share / size))):
            place = PLACES[k % len(PLACES)] + (f" {k // len(PLACES) + 1}" if k >= len(PLACES) else "")
            label = {"high": "High School", "middle": "Middle School", "elementary": "Elementary"}[band]
            schools.append(School(len(schools), "", f"{place} {label}", band, low, high, ""))
    # A disciplinary alternative campus: real, enrolled, and marked State Exclude in the Ed-Fi extracts.
    schools.append(School(len(schools), "", "Disciplinary Alternative Education Program", "daep", 6, 12, ""))
    return tuple(
        School(
            s.index, f"{s.index + 1:03d}", s.name, s.band, s.low, s.high, str(1000 + s.index * 7919 % 9000)
        )
        for s in schools
    )


def _permuted_ids(rng: np.random.Generator, n: int, low: int, span: int, step: int) -> np.ndarray:
    """Distinct ids in [low, low + span) that do not look sequential (`step` is coprime with `span`)."""
    return low + (np.arange(n, dtype=np.int64) * step + int(rng.integers(span))) % span


class Population:
    """Students as parallel arrays, indexed 0..n-1; every file is written from these."""

    def __init__(self, n: int, seed: int, clock: Clock):
        rng = rng_for(seed, "population")
        self.n, self.seed, self.clock = n, seed, clock
        self.local = np.arange(100_001, 100_001 + n, dtype=np.int64)
        # Ten-digit state ids: the Texas unique student id and the Indiana STN (the Ed-Fi id).
        self.state_id = texts(strs(_permuted_ids(rng, n, 10**9, 9 * 10**9, 2_654_435_761)))
        self.stn = texts(strs(_permuted_ids(rng, n, 10**9, 9 * 10**9, 2_246_822_519)))
        self.samegoal_id = texts(strs(_permuted_ids(rng, n, 10_000_000, 90_000_000, 97_964_393)))
        self.qmlativ_id = np.arange(1_001, 1_001 + n, dtype=np.int64)
        self.name_id = self.qmlativ_id + 500_000

        self.female = rng.random(n) < 0.49
        first_f = rng.integers(len(FIRST_F), size=n)
        first_m = rng.integers(len(FIRST_M), size=n)
        self.first_idx = np.where(self.female, first_f, len(FIRST_F) + first_m)
        self.middle_idx = np.where(self.female, first_m, len(FIRST_F) + first_f)  # any other first name
        self.last_idx = rng.integers(len(LAST), size=n)
        self.has_middle = rng.random(n) < 0.7

        self.grade = rng.choice(GRADES, size=n, p=_GRADE_SHARE / _GRADE_SHARE.sum())
        self.grade[rng.choice(n, size=len(GRADES), replace=False)] = GRADES  # every grade, however small
        # Five on the first day of school in kindergarten, a year older per grade.
        age_days = np.round((self.grade + 5) * 365.25).astype(np.int64) + rng.integers(0, 365, size=n)
        self.birth = clock.first_day(clock.year) - age_days
        # Whole school years in the district before this one; entry is the first day of that school year.
        self.years_here = np.minimum(rng.integers(0, 6, size=n), np.maximum(self.grade, 0))
        self.entry = clock.first_day(clock.year) - 365 * self.years_here + rng.integers(0, 20, size=n)
        self.active = ~spread(rng, n, 0.035, 2)  # the rest transferred out this year (Enroll Status 2)
        self.left = clock.first_day(clock.year) + rng.integers(5, 120, size=n)  # withdrawal day if inactive

        self.schools = _schools(n)
        self.school = self._assign_schools(rng)

        self.sped = spread(rng, n, 0.14, 12)
        self.disability = rng.choice(
            len(DISABILITIES), size=n, p=np.array(_DISABILITY_SHARE) / sum(_DISABILITY_SHARE)
        )
        hearing = self.sped & np.isin(self.disability, [DISABILITIES.index(c) for c in HEARING])
        self.disability[at_least(rng, hearing, 4, self.sped) & ~hearing] = DISABILITIES.index("03")
        u = rng.random((n, 8))
        self.child_find = at_least(rng, (self.sped & (u[:, 0] < 0.2)) | (~self.sped & (u[:, 0] < 0.01)), 5)
        self.restraint = at_least(
            rng, (self.sped & (u[:, 1] < 0.025)) | (u[:, 1] < 0.0005), 4, self.grade >= 0
        )
        self.dyslexia = at_least(rng, (self.grade >= 1) & (u[:, 2] < 0.068), 5, self.grade >= 1)
        self.section_504 = at_least(
            rng, ~self.sped & ((self.dyslexia & (u[:, 3] < 0.55)) | (u[:, 4] < 0.065)), 5, ~self.sped
        )
        self.intervention = spread(rng, n, 0.08, 5)
        self.eb = at_least(rng, u[:, 5] < np.where(self.grade <= 5, 0.27, 0.13), 6)
        self.homeless = spread(rng, n, 0.02, 3)
        self.unaccompanied = at_least(
            rng, self.homeless & (self.grade >= 9) & (u[:, 6] < 0.3), 1, self.homeless
        )
        self.lunch = rng.choice(3, size=n, p=[0.55, 0.08, 0.37])  # F, R, P
        self.medical = np.where(u[:, 7] < 0.08, rng.integers(1, len(MEDICAL_ALERTS), size=n), 0)
        self.medical[at_least(rng, self.medical == 1, 1)] = 1  # the alert that holds a comma and a newline
        self.samegoal_students = (
            self.sped
            | self.child_find
            | self.restraint
            | self.dyslexia
            | self.section_504
            | self.intervention
            | self.eb
        )
        self._identity_cases(rng)

    def _assign_schools(self, rng: np.random.Generator) -> np.ndarray:
        school = np.zeros(self.n, dtype=np.int64)
        for band, low, high, _ in _BANDS:
            ids = np.array([s.index for s in self.schools if s.band == band])
            in_band = (self.grade >= low) & (self.grade <= high)
            school[in_band] = rng.choice(ids, size=int(in_band.sum()))
        daep = at_least(rng, (self.grade >= 6) & (rng.random(self.n) < 0.008), 3, self.grade >= 6)
        school[daep] = self.schools[-1].index
        return school

    @cached_property
    def local_id(self) -> np.ndarray:
        return texts(strs(self.local))

    @cached_property
    def first(self) -> np.ndarray:
        return texts(FIRST_F + FIRST_M)[self.first_idx]

    @cached_property
    def middle(self) -> np.ndarray:
        return np.where(self.has_middle, texts(FIRST_F + FIRST_M)[self.middle_idx], "").astype(object)

    @cached_property
    def last(self) -> np.ndarray:
        return texts(LAST)[self.last_idx]

    @cached_property
    def birth_date(self) -> np.ndarray:
        return texts(self.clock.iso(self.birth))

    @cached_property
    def campus_id(self) -> np.ndarray:
        return texts([s.campus_id for s in self.schools])[self.school]

    def _identity_cases(self, rng: np.random.Generator) -> None:
        """Disjoint sets of SameGoal students whose ids do not line up with Qmlativ.

        Missing ones are new enrollees the demographics integration has not synced yet; the blank and
        stale local ids can only be matched on the state id.
        """
        pool = rng.permutation(np.flatnonzero(self.samegoal_students))
        k_missing, k_local = max(3, round(len(pool) * 0.01)), max(2, round(len(pool) * 0.005))
        cuts = [k_missing, k_missing + k_local, k_missing + 2 * k_local]
        missing, blank, stale, _ = np.split(pool, cuts)
        self.missing_from_qmlativ, self.local_id_blank, self.local_id_stale = (
            np.isin(np.arange(self.n), ids) for ids in (missing, blank, stale)
        )
