"""fault_app with a slow post-fork hook: every worker (and each respawn) sleeps
FAULT_POSTFORK_SLEEP seconds (default 2) in uwsgi.post_fork_hook, which the python plugin runs
before cowguard sets the new worker up. Holds a worker between its fork and cowguard's
process_started for long enough to see what the stats say about it meanwhile."""
import os
import time

import uwsgi

from fault_app import application  # noqa: F401


def _slow_post_fork():
    time.sleep(float(os.environ.get("FAULT_POSTFORK_SLEEP", "2")))


uwsgi.post_fork_hook = _slow_post_fork
