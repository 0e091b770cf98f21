"""Every asset is partitioned by district id (SPEC §2): the partitions are the configured districts."""

import dagster as dg

from sg_orchestration.config import current_districts

DISTRICTS = dg.StaticPartitionsDefinition(current_districts().ids)
