-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
-- The macro `samegoal_current` (macros/samegoal.sql) applies the SameGoal integration rules.
{{ samegoal_current('samegoal__dyslexia') }}
