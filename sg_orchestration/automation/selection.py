"""What a district's nightly run materializes: the same for the CLI, the schedule and the sensor."""

import dagster as dg

from sg_orchestration.config import District


def nightly_selection(asset_graph, district: District) -> list[dg.AssetKey] | None:
    """The nightly job's assets that the district needs: all but the steps of targets it does not have
    (dbt; Ed-Fi's validate and publish too: their assets and checks are not even planned); None when it
    needs all."""
    from sg_orchestration.publish.assets import EDFI_KEY
    from sg_orchestration.transform.dbt import build_dbt_assets, needed
    from sg_orchestration.validate.edfi import KEY as EDFI_VALIDATION

    skip = {
        key
        for a in build_dbt_assets()
        if not needed(a.op.name.removeprefix("dbt_"), district)
        for key in a.keys
    }
    if not needed("edfi", district):  # its validate and publish steps too
        skip |= {EDFI_VALIDATION, EDFI_KEY}
    if not skip:
        return None
    return sorted(set(asset_graph.materializable_asset_keys) - skip, key=lambda k: k.to_user_string())
