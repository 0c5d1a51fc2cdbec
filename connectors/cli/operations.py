"""Start the flow process's health thread and, with BWSM_ADMIN_PORT, its admin endpoint (called by flow_process).

Lives in the command line because it reads the flow's Settings (the one place the environment is read) and the
process's place in its cluster from the `python -m bytewax.run` arguments.
"""

from __future__ import annotations

from bytewax.speechmatics.connectors.admin import serve
from bytewax.speechmatics.connectors.health import HEALTH, Monitor
from bytewax.speechmatics.flows.settings import Settings


def start(settings: Settings) -> int:
    """Start the monitor (and the admin endpoint when configured); returns the admin port (0: none)."""
    sub = settings.submission
    HEALTH.stall_seconds = settings.run.live_stall_seconds  # /live watches this process's dataflow
    Monitor(settings.kafka.client_config(), sub.batch_url,
            embedded_worker=not sub.api_key and settings.worker.embedded, journal_dir=sub.journal_dir).start()
    if not settings.run.admin_port:
        return 0
    server = serve(settings.run.admin_port,
                   process={"process_id": sub.process_index, "processes": sub.cluster_processes})
    return server.server_address[1]
