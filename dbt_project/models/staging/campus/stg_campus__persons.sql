-- Generated from sg_orchestration/catalog.py by `python -m sg_orchestration.transform.staging`.
-- The macro `stage` (macros/stage.sql) renames and casts the columns listed in _sources.yml.
{{ stage('campus__persons') }}
