"""The job queue: Redis Streams with a consumer group, delayed jobs, claims, dead letters (`stream`), and the
worker that runs its jobs (`worker`). Jobs may run more than once; handlers are written for that.

Everything else in the bot imports the queue from here.
"""

from bot.queue.stream import (
           Job,
           Permanent,
           Queue,
           QueueStats,
           Retry,
           error_text,
           job_from_entry,
           once,
)
from bot.queue.replies import as_text
from bot.queue.worker import Worker

__all__ = ["Job", "Permanent", "Queue", "QueueStats", "Retry", "Worker", "as_text", "error_text", "job_from_entry",
           "once"]
