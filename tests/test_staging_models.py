"""The dbt sources and staging models are generated from the catalog: the committed files must match."""

from sg_orchestration.catalog import SOURCES
from sg_orchestration.transform.staging import STAGING_DIR, model_name, render


def test_committed_staging_models_match_the_catalog():
    stale = [str(p) for p, text in render().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run `uv run python -m sg_orchestration.transform.staging`; stale: {stale}"


def test_one_staging_model_per_source_table_and_nothing_else():
    on_disk = {p.stem for p in STAGING_DIR.rglob("stg_*.sql")}
    assert on_disk == {model_name(s) for s in SOURCES}
