-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
{% macro sg_true_values() %}('Y', 'y', 'true', 'TRUE', 'True', '1'){% endmacro %}
