-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
select
    _district_id as district_id,
    "sourcedId" as sourced_id,
    "status" as status,
    {{ sg_datetime('"dateLastModified"') }} as date_last_modified,
    {{ sg_date('"birthDate"') }} as birth_date,
    "sex" as sex,
    {{ sg_bool('"americanIndianOrAlaskaNative"') }} as american_indian_or_alaska_native,
    {{ sg_bool('"asian"') }} as asian,
    {{ sg_bool('"blackOrAfricanAmerican"') }} as black_or_african_american,
    {{ sg_bool('"nativeHawaiianOrOtherPacificIslander"') }} as native_hawaiian_or_other_pacific_islander,
    {{ sg_bool('"white"') }} as white,
    {{ sg_bool('"demographicRaceTwoOrMoreRaces"') }} as demographic_race_two_or_more_races,
    {{ sg_bool('"hispanicOrLatinoEthnicity"') }} as hispanic_or_latino_ethnicity,
    "countryOfBirthCode" as country_of_birth_code,
    "stateOfBirthAbbreviation" as state_of_birth_abbreviation,
    "cityOfBirth" as city_of_birth,
    "publicSchoolResidenceStatus" as public_school_residence_status,
    _extra as extra_columns,
    _load_id as load_id,
    _loaded_at as loaded_at,
    _source_row as source_row,
    _row_hash as row_hash
from {{ source('raw', 'oneroster__demographics') }}
where _error is null  -- malformed rows stay in raw and ops.error_log
  and {{ latest_snapshot('oneroster__demographics') }}
