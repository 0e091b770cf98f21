"""What a district's nightly run materializes: the same for the CLI, the schedule and the sensor."""

import dagster as dg

from sg_orchestration.config import District


def nightly_selection(asset_graph, district: District) -> list[dg.AssetKey] | None:
    """The nightly job's assets that the district needs: all but the dbt steps of targets it does not have
    (their assets and checks are not even planned); None when it needs all."""
    from sg_orchestration.transform.dbt import build_dbt_assets, needed

    skip = {
        key
        for a in build_dbt_assets()
        if not needed(a.op.name.removeprefix("dbt_"), district)
        for key in a.keys
    }
    if not skip:
        return None
    return sorted(set(asset_graph.materializable_asset_keys) - skip, key=lambda k: k.to_user_string())
