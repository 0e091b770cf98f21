-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
-- The macro `qmlativ_mart` (macros/qmlativ.sql) selects the screen's fields.
{{ qmlativ_mart('samegoal__special_education_enrollment') }}
