"""The store: every read and write of jobs, placements, events and the GPU ledger.

One class for callers, assembled from its parts: `FleetStore` (sites, pools, running
work), `JobQueries` (submission, reads, the queue), `JobTransitions` (every state
change, each one atomic; see that module for the guarantees) and `BatchTransitions` (a
scheduling pass's placements and deferrals, many in one transaction, the same guarantees),
`FootprintStore` (each run's energy and emissions, for the reports), `DemandStore`
(job records for the demand forecaster), `CarbonHistoryStore` (observed grid intensity,
for the own carbon forecaster) and `ServiceStore` (inference services).
"""

from __future__ import annotations

from broker.db.batch import BatchTransitions
from broker.db.batch import Deferral as Deferral
from broker.db.carbon_history import CarbonHistoryStore
from broker.db.demand_store import DemandStore
from broker.db.fleet_store import FleetStore
from broker.db.footprints import FootprintStore
from broker.db.job_queries import InvalidCursor as InvalidCursor
from broker.db.job_queries import JobDetail as JobDetail
from broker.db.job_queries import JobPage as JobPage
from broker.db.job_queries import decode_cursor as decode_cursor
from broker.db.job_queries import encode_cursor as encode_cursor
from broker.db.service_store import ServiceStore
from broker.db.transitions import JobTransitions
from broker.db.transitions import Released as Released


class Store(
    FleetStore,
    JobTransitions,
    BatchTransitions,
    FootprintStore,
    DemandStore,
    CarbonHistoryStore,
    ServiceStore,
):
    """Fleet and job persistence over one session factory and clock."""
