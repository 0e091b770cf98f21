{#- Seed 002's scope-year logic: whether a record reports to the configured school year `y`, a row of
    int_edfi__school_years (`scope`: current, previous or future against the run's as-of date;
    `start_date` / `end_date`: the School Years editor's, 07/01 and 06/30 when blank). "Today's date" is
    the run's as-of date, so a rerun or a backfill decides as the night it stands for did.

    Records with start and end dates, as the seed words it:
    - current year: the start date is on or before today and the end date on or after today;
    - previous years: the start date is on or before the year's end date and the end date after it;
    - future years: the start date is on or before the year's start date and the end date on or after it. -#}
{% macro edfi_dates_in_scope_year(start_date, end_date, y) -%}
case {{ y }}.scope
    when 'current' then {{ start_date }} <= {{ y }}.as_of and {{ end_date }} >= {{ y }}.as_of
    when 'previous' then {{ start_date }} <= {{ y }}.end_date and {{ end_date }} > {{ y }}.end_date
    when 'future' then {{ start_date }} <= {{ y }}.start_date and {{ end_date }} >= {{ y }}.start_date
end
{%- endmacro %}

{#- Records with a single date, as the seed words it:
    - current year: compared to today's date: eligible once its date is reached (on or before today);
    - previous years: the date is on or before the year's end date;
    - future years: the date is on or after the year's start date. -#}
{% macro edfi_date_in_scope_year(record_date, y) -%}
case {{ y }}.scope
    when 'current' then {{ record_date }} <= {{ y }}.as_of
    when 'previous' then {{ record_date }} <= {{ y }}.end_date
    when 'future' then {{ record_date }} >= {{ y }}.start_date
end
{%- endmacro %}

{#- The rule above that a record of `y` had to meet, in words, for the reason of one that did not. -#}
{% macro edfi_scope_year_rule(single_date, y) -%}
case
    when {{ single_date }} then case {{ y }}.scope
        when 'current' then 'the current year: its date must be on or before the as-of date ' || {{ y }}.as_of
        when 'previous' then 'a previous year: its date must be on or before the year''s end date ' || {{ y }}.end_date
        when 'future' then 'a future year: its date must be on or after the year''s start date ' || {{ y }}.start_date
    end
    else case {{ y }}.scope
        when 'current' then 'the current year: it must start on or before and end on or after the as-of date ' || {{ y }}.as_of
        when 'previous' then 'a previous year: it must start on or before and end after the year''s end date ' || {{ y }}.end_date
        when 'future' then 'a future year: it must start on or before and end on or after the year''s start date ' || {{ y }}.start_date
    end
end
{%- endmacro %}

{#- Why a row is not sent: `rule` (a short name to group by), `kind` (`excluded`: a rule of the seed says
    do not send it; `error`: a data problem the district fixes, for ops.error_log), the reason in words,
    and for an error the field and value at fault and how to fix it. -#}
{% macro edfi_reason(rule, kind, reason, field='null', value='null', fix='null') -%}
{'rule': '{{ rule }}', 'kind': '{{ kind }}', 'reason': {{ reason }}, 'field': {{ field }}::varchar,
 'value': {{ value }}::varchar, 'fix': {{ fix }}::varchar}
{%- endmacro %}

{#- The grain both payload profiles share (the DS 5.2 record's whole key, the Indiana record's first part):
    a connection's school year, a student and an education organization. -#}
{% macro edfi_student_organization_key() -%}
district_id, connection, school_year, student_unique_id, education_organization_id
{%- endmacro %}

{#- The references both payload profiles open with: the student by Ed-Fi ID, the education organization by
    its integer id (key-value arguments of json_object). -#}
{% macro edfi_payload_references() -%}
'studentReference', json_object('studentUniqueId', student_unique_id),
'educationOrganizationReference', json_object('educationOrganizationId', education_organization_id)
{%- endmacro %}
