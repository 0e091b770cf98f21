"""The deterministic synthetic-district generator: every input of SPEC §3 from one student population."""

from sg_orchestration.generate.district import generate_district
from sg_orchestration.generate.next_day import next_day

__all__ = ["generate_district", "next_day"]
