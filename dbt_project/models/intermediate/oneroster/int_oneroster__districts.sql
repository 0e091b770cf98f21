-- Where each OneRoster district's bundle comes from (ops.oneroster_sources, written by the step): `powerschool`
-- (seed 001 §2.1, the PowerSchool export and the attribute mapping) or `oneroster` (§2.2, another SIS's
-- OneRoster 1.1 bundle, validated and re-exported the same way). Each mart reads its rows of one source.
{{ config(pre_hook="{{ run_input_tables(['oneroster_sources']) }}") }}
select district_id, source from {{ source('ops', 'oneroster_sources') }}
