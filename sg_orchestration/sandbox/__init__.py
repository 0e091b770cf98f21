"""The sandbox (SPEC §6): local servers on 127.0.0.1 honouring the real source and target contracts, so the
demo and the tests exercise the same code that production points at real endpoints through districts.yaml.

`Sandbox` runs them in-process (tests); `up`/`down`/`serve` run them as a background process (the CLI).
"""

from sg_orchestration.sandbox.process import down, serve, up
from sg_orchestration.sandbox.server import CREDENTIAL_NAMES, Sandbox

__all__ = ["CREDENTIAL_NAMES", "Sandbox", "down", "serve", "up"]
