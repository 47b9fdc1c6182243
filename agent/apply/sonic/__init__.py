"""SONiC backend: the data plane written into Redis exactly as swss-common's producers do.

- db: database_config.json and one asyncio connection per database name;
- producer: ProducerStateTable (APPL_DB) with set / delete / replace and batches;
- table: Table (CONFIG_DB, STATE_DB), ConfigDBConnector's conventions;
- schema: DataplaneDesired -> APPL_DB entries (routes, VTEP, remote VTEPs, FDB, neighbours);
- applier: SonicDataplane (ownership in STATE_DB, conflicts, resync after a Redis restart);
- device: CONFIG_DB defaults (hostname, ASN, router id, routing config mode) and the swss_zmq
  refusal;
- crm: COUNTERS_DB CRM counters and CONFIG_DB CRM thresholds for headroom;
- state: the agent's own state in STATE_DB (KUBE_FABRIC_AGENT|...).
"""

from agent.apply.sonic.applier import SonicApplyResult, SonicDataplane
from agent.apply.sonic.crm import CrmResource, CrmSnapshot, read_crm
from agent.apply.sonic.db import SonicDb, SonicDbConfig, load_database_config, open_sonic_db
from agent.apply.sonic.device import DeviceDefaults, SwssZmqEnabled, read_device_defaults
from agent.apply.sonic.producer import ProducerStateTable
from agent.apply.sonic.schema import OverlayMapping
from agent.apply.sonic.state import AgentStateWriter, ApplierSummary
from agent.apply.sonic.table import Table

__all__ = [
    "AgentStateWriter",
    "ApplierSummary",
    "CrmResource",
    "CrmSnapshot",
    "DeviceDefaults",
    "OverlayMapping",
    "ProducerStateTable",
    "SonicApplyResult",
    "SonicDataplane",
    "SonicDb",
    "SonicDbConfig",
    "SwssZmqEnabled",
    "Table",
    "load_database_config",
    "open_sonic_db",
    "read_crm",
    "read_device_defaults",
]
