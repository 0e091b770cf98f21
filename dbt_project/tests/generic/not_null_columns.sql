{#- The model's required columns, in one scan (a not_null test per column read the model once each):
    one row per column holding nulls, with how many; the test fails on the null cells counted. -#}
{% test not_null_columns(model, column_names) %}
{{ config(fail_calc="coalesce(sum(null_cells), 0)") }}
select null_column, count(*) as null_cells
from (
    select unnest([
        {%- for column in column_names %}
        case when {{ adapter.quote(column) }} is null then '{{ column }}' end{{ "," if not loop.last }}
        {%- endfor %}
    ]) as null_column
    from {{ model }}
)
where null_column is not null
group by null_column
{% endtest %}
