"""ds01q: a fair queue for shared GPU servers, with MIG-aware scheduling of Docker jobs."""
from ds01q.client.api import Client
from ds01q.errors import Ds01qError
from ds01q.types import JobState, Reason, ResourceRequest

__version__ = "0.1.0"
__all__ = ["Client", "Ds01qError", "JobState", "Reason", "ResourceRequest", "__version__"]
