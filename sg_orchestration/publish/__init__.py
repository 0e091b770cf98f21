"""Publishing desired state to targets (SPEC §5): the ledger diff, the async sender and the engine."""

from sg_orchestration.publish.engine import Adapter, PublishResult, publish
from sg_orchestration.publish.sender import Reply, Request, RetryPolicy, TokenProvider

__all__ = ["Adapter", "PublishResult", "Reply", "Request", "RetryPolicy", "TokenProvider", "publish"]
