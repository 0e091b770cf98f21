"""sg_orchestration: special-programs data hub."""
