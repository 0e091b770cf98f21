{% test unique_per_district(model, column_names) %}
select district_id, {{ column_names | join(', ') }}, count(*) as n
from {{ model }}
group by all
having count(*) > 1
{% endtest %}
