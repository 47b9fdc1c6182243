"""SONiC backend: the data plane written into Redis exactly as swss-common's producers do.

- startup: prepare(): open the databases, the switch's identity from CONFIG_DB, whether FRR may
  be managed (SonicStart), StartupError when the agent cannot run;
- applier: SonicDataplane, the applier contract (agent.apply.contract): ownership in STATE_DB,
  conflicts, replay after a Redis restart; its loops() run the Redis watcher and the CRM poller,
  its report() writes STATE_DB;
- db: database_config.json and one asyncio connection per database name;
- producer: ProducerStateTable (APPL_DB) with set / delete / replace and batches;
- table: Table (CONFIG_DB, STATE_DB), ConfigDBConnector's conventions;
- schema: DataplaneDesired -> APPL_DB entries (routes, VTEP, remote VTEPs, FDB, neighbours);
- device: CONFIG_DB defaults (hostname, ASN, router id, routing config mode) and the swss_zmq
  refusal;
- crm: COUNTERS_DB CRM counters and CONFIG_DB CRM thresholds as HardwareReadings (CrmPoller);
- state: the agent's own state in STATE_DB (KUBE_FABRIC_AGENT|...).
"""

from agent.apply.sonic.applier import SonicDataplane
from agent.apply.sonic.crm import CrmPoller, CrmResource, CrmSnapshot, crm_reading, read_crm
from agent.apply.sonic.db import SonicDb, SonicDbConfig, load_database_config, open_sonic_db
from agent.apply.sonic.device import DeviceDefaults, SwssZmqEnabled, read_device_defaults
from agent.apply.sonic.producer import ProducerStateTable
from agent.apply.sonic.schema import OverlayMapping
from agent.apply.sonic.startup import SonicStart, prepare
from agent.apply.sonic.state import AgentStateWriter, ApplierSummary, StateDbPublisher
from agent.apply.sonic.table import Table

__all__ = [
    "AgentStateWriter",
    "ApplierSummary",
    "CrmPoller",
    "CrmResource",
    "CrmSnapshot",
    "DeviceDefaults",
    "OverlayMapping",
    "ProducerStateTable",
    "SonicDataplane",
    "SonicDb",
    "SonicDbConfig",
    "SonicStart",
    "StateDbPublisher",
    "SwssZmqEnabled",
    "Table",
    "crm_reading",
    "load_database_config",
    "open_sonic_db",
    "prepare",
    "read_crm",
    "read_device_defaults",
]
