"""What a district's nightly run materializes: the same for the CLI, the schedule and the sensor."""

import dagster as dg

from sg_orchestration.config import District


def nightly_selection(asset_graph, district: District) -> list[dg.AssetKey] | None:
    """The nightly job's assets that the district needs: all but the steps of targets it does not have
    (dbt, validate and publish: their assets and checks are not even planned); None when it
    needs all."""
    from sg_orchestration.oneroster.assets import BUNDLE_KEY, PUBLISH_KEY
    from sg_orchestration.publish.assets import EDFI_KEY, QMLATIV_KEY
    from sg_orchestration.transform.dbt import build_dbt_assets, needed
    from sg_orchestration.validate.edfi import KEY as EDFI_VALIDATION
    from sg_orchestration.validate.qmlativ import KEY as QMLATIV_VALIDATION

    skip = {
        key
        for a in build_dbt_assets()
        if not needed(a.op.name.removeprefix("dbt_"), district)
        for key in a.keys
    }
    for target, later in (
        ("edfi", {EDFI_VALIDATION, EDFI_KEY}),
        ("qmlativ", {QMLATIV_VALIDATION, QMLATIV_KEY}),
        ("oneroster", {BUNDLE_KEY, PUBLISH_KEY}),
    ):
        if not needed(target, district):  # its validate and publish steps too
            skip |= later
    if not skip:
        return None
    return sorted(set(asset_graph.materializable_asset_keys) - skip, key=lambda k: k.to_user_string())
