"""Jobs: the store (SQLite, shared by the UI and the worker), the typed job record, the worker
that runs each kind of job, and the table of how a run's exit becomes a job status.

`from studio.jobs import JobStore` keeps working; the worker lives in studio.jobs.worker (and is
re-exported by studio.worker). No torch import here.
"""

from studio.core.secrets import REDACTED, redact  # noqa: F401
from studio.core.vocab import ACTIVE_STATUSES, RESUMABLE_STATUSES, STATUSES, next_lower_tier  # noqa: F401
from studio.jobs.progress import slugify  # noqa: F401
from studio.jobs.record import Job, validated_config  # noqa: F401
from studio.jobs.schema import BUSY_TIMEOUT_MS, MIGRATIONS, SCHEMA_VERSION, JobNotFound  # noqa: F401
from studio.jobs.store import JobStateError, JobStore  # noqa: F401
