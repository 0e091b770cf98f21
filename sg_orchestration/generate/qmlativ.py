"""Qmlativ student objects (SPEC §3.2): the id mapping, without the students demographics has not synced."""

from __future__ import annotations

import numpy as np

from sg_orchestration.generate.common import Output, strs, write_blocks
from sg_orchestration.generate.population import QMLATIV_ENTITY_ID, Population


def write_qmlativ(out: Output, pop: Population) -> None:
    synced = np.flatnonzero(~pop.missing_from_qmlativ)
    entity = str(QMLATIV_ENTITY_ID)

    def block(rows: slice) -> list[list[str]]:
        s = synced[rows]
        return [
            strs(pop.qmlativ_id[s]),
            strs(pop.name_id[s]),
            pop.local_id[s].tolist(),
            pop.state_id[s].tolist(),
            pop.first[s].tolist(),
            pop.last[s].tolist(),
            pop.birth_date[s].tolist(),
            [entity] * len(s),
        ]

    with out.csv("qmlativ__students") as csv_out:
        write_blocks(csv_out, len(synced), block)
