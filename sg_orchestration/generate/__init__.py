"""The deterministic synthetic-district generator: every input of SPEC §3 from one student population."""

from sg_orchestration.generate.district import generate_district

__all__ = ["generate_district"]
