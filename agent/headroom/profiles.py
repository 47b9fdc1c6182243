"""Built-in ASIC capacity profiles: how many entries each hardware table of a known switch ASIC
holds, every figure with its published source (vendor documentation, named in each figure's
`source`, which `fabricctl headroom` shows).

Naming: `<asic>` is the ASIC's default forwarding profile, `<asic>/<forwarding-profile>` one of
its alternative partitions (`spectrum-2/lpm-balanced`); `<asic>/default` is accepted too.

Rules that keep the figures honest rather than hopeful:
- Published "64k" is read as 64,000, not 65,536: the smaller reading, because a profile must
  never promise more than the hardware holds. A published range (Tomahawk MAC 40k-72k) gives
  its lower end.
- A figure the reference does not publish is an *estimate*, and its source says so. In an
  alternative forwarding profile an unpublished table is assumed to be a quarter of the same
  ASIC's default: those profiles re-partition shared memory, so what one table gains another
  loses, and assuming the default would overstate it.
- Every value is overridable from `headroom.capacity` (source "config"), which always wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from agent.headroom.resources import RESOURCES, Capacity, Resource, check_resource

K = 1000  # see the module docstring: published "k" figures are read as thousands

CUMULUS = "Cumulus Linux 'Supported Route Table Entries' (NVIDIA)"

NEXTHOPS_ESTIMATE = Capacity(
    4096,
    "estimate: sonic-mgmt VXLAN CRM test scale (4096 nexthops), a tested figure and not an ASIC"
    " maximum; set headroom.capacity.nexthops from the vendor's table",
)
NEXTHOP_GROUPS_ESTIMATE = Capacity(
    512,
    "estimate: sonic-mgmt VXLAN CRM test scale (512 nexthop groups), a tested figure and not an"
    " ASIC maximum; set headroom.capacity.nexthop_groups from the vendor's table (on SONiC, CRM's"
    " nexthop_group counters replace it)",
)
NEIGHBORS_ESTIMATE = Capacity(
    8 * K,
    "conservative estimate: no host/neighbour table figure is published in the reference; set"
    " headroom.capacity.neighbors from the vendor's table",
)
VTEPS_HER = Capacity(
    128, "Cumulus Linux documentation: up to 128 remote VTEPs with head-end replication"
)
VTEPS_SPECTRUM = Capacity(
    750,
    "Mellanox Spectrum VXLAN article: 'most switches support up to 128 remote VTEPs, Spectrum up"
    " to 750' (Cumulus documents 128 with head-end replication: override if that applies)",
)

# The tables an alternative forwarding profile re-partitions; nexthops, nexthop groups and remote
# VTEPs are estimates or per-ASIC limits to begin with and are inherited from the ASIC's default.
_REPARTITIONED: tuple[Resource, ...] = ("ipv4_routes", "ipv6_routes", "fdb_entries", "neighbors")


class UnknownProfileError(ValueError):
    """headroom.profile names no built-in profile; the message lists the known ones."""


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    capacities: Mapping[Resource, Capacity]  # read-only view, every resource present


def _published(value: int, what: str) -> Capacity:
    return Capacity(value, f"{CUMULUS}: {what}")


def _half_v4(v4: Capacity, asic: str) -> Capacity:
    return Capacity(
        v4.value // 2,
        f"estimate: half the IPv4 LPM figure ({v4.value}); IPv6 LPM is not published for {asic}"
        " and IPv6 prefixes take wider LPM entries",
    )


def _family(
    asic: str,
    label: str,
    default: Mapping[Resource, Capacity],
    variants: Mapping[str, Mapping[Resource, Capacity]],
    note: str = "",
) -> dict[str, Profile]:
    """The default profile of one ASIC and its alternative forwarding profiles, each completed
    with labelled estimates where the reference publishes nothing."""
    missing = [r for r in RESOURCES if r not in default]
    if missing:  # a programming error in this table, caught by the tests at import
        raise AssertionError(f"{asic} default profile lacks {missing}")
    profiles = {
        asic: Profile(asic, f"{label}, default forwarding profile{note}",
                      MappingProxyType({r: default[r] for r in RESOURCES})),
    }
    for variant, published in variants.items():
        caps: dict[Resource, Capacity] = {}
        for resource in RESOURCES:
            if resource in published:
                caps[resource] = published[resource]
            elif resource in _REPARTITIONED:
                base = default[resource]
                caps[resource] = Capacity(
                    base.value // 4,
                    f"estimate: not published for {label} {variant}, which re-partitions shared"
                    f" tables; a quarter of the {label} default ({base.value}) is assumed. Set"
                    f" headroom.capacity.{resource} from the vendor's table",
                )
            else:
                caps[resource] = Capacity(
                    default[resource].value, f"as {label} default: {default[resource].source}"
                )
        name = f"{asic}/{variant}"
        profiles[name] = Profile(name, f"{label}, forwarding profile {variant}{note}",
                                 MappingProxyType(caps))
    return profiles


def _generic() -> Profile:
    v4 = Capacity(
        64 * K,
        "estimate: the smallest published IPv4 LPM default among the built-in ASICs (Spectrum-1"
        f" and Tomahawk, 64k; {CUMULUS})",
    )
    caps: dict[Resource, Capacity] = {
        "ipv4_routes": v4,
        "ipv6_routes": _half_v4(v4, "an unknown ASIC"),
        "nexthops": NEXTHOPS_ESTIMATE,
        "nexthop_groups": NEXTHOP_GROUPS_ESTIMATE,
        "neighbors": NEIGHBORS_ESTIMATE,
        "fdb_entries": Capacity(
            32 * K,
            "estimate: the smallest published MAC table among the built-in ASICs (Trident II/II+/3"
            f" default, 32k; {CUMULUS})",
        ),
        "remote_vteps": VTEPS_HER,
    }
    return Profile("generic", "unknown ASIC: the smallest published figures, estimates elsewhere",
                   MappingProxyType(caps))


def _spectrum1() -> dict[str, Profile]:
    v4 = _published(64 * K, "Spectrum-1 default, IPv4 LPM 64k")
    default: dict[Resource, Capacity] = {
        "ipv4_routes": v4,
        "ipv6_routes": _half_v4(v4, "Spectrum-1"),
        "nexthops": NEXTHOPS_ESTIMATE,
        "nexthop_groups": NEXTHOP_GROUPS_ESTIMATE,
        "neighbors": NEIGHBORS_ESTIMATE,
        "fdb_entries": _published(40 * K, "Spectrum-1 default, MAC 40k"),
        "remote_vteps": VTEPS_SPECTRUM,
    }
    return _family("spectrum-1", "Spectrum-1", default, {
        "v4-lpm-heavy-1": {
            "ipv4_routes": _published(
                176 * K,
                "Spectrum-1 v4-lpm-heavy-1, IPv4 LPM 176k (Mellanox: 'up to 176,000 IP route"
                " entries')",
            ),
        },
        "l2-heavy-1": {"fdb_entries": _published(176 * K, "Spectrum-1 l2-heavy-1, MAC 176k")},
    }, note="; KVD 245,760 entries shared by host, adjacency and FDB (devlink /kvd)")


def _spectrum23(asic: str, label: str) -> dict[str, Profile]:
    default: dict[Resource, Capacity] = {
        "ipv4_routes": _published(82 * K, "Spectrum-2/3 default, IPv4 LPM 82k"),
        "ipv6_routes": _published(74 * K, "Spectrum-2/3 default, IPv6 LPM 74k"),
        "nexthops": NEXTHOPS_ESTIMATE,
        "nexthop_groups": NEXTHOP_GROUPS_ESTIMATE,
        "neighbors": NEIGHBORS_ESTIMATE,
        "fdb_entries": _published(50 * K, "Spectrum-2/3 default, MAC 50k"),
        "remote_vteps": VTEPS_SPECTRUM,
    }
    return _family(asic, label, default, {
        "v4-lpm-heavy-1": {
            "ipv4_routes": _published(256 * K, "Spectrum-2/3 v4-lpm-heavy-1, IPv4 LPM 256k"),
        },
        "lpm-balanced": {
            "ipv4_routes": _published(124 * K, "Spectrum-2/3 lpm-balanced, IPv4 LPM 124k"),
            "ipv6_routes": _published(124 * K, "Spectrum-2/3 lpm-balanced, IPv6 LPM 124k"),
        },
        "l2-heavy-1": {"fdb_entries": _published(239 * K, "Spectrum-2/3 l2-heavy-1, MAC 239k")},
    }, note="; KVD 524,288 entries shared by LPM, host, adjacency and FDB (NVIDIA resmon), so"
            " not every table reaches its figure at once")


def _tomahawk() -> dict[str, Profile]:
    v4 = _published(64 * K, "Tomahawk/Tomahawk+ default, IPv4 LPM 64k")
    default: dict[Resource, Capacity] = {
        "ipv4_routes": v4,
        "ipv6_routes": _half_v4(v4, "Tomahawk"),
        "nexthops": NEXTHOPS_ESTIMATE,
        "nexthop_groups": NEXTHOP_GROUPS_ESTIMATE,
        "neighbors": NEIGHBORS_ESTIMATE,
        "fdb_entries": _published(
            40 * K, "Tomahawk/Tomahawk+ default, MAC 40k-72k (the lower end is used)"
        ),
        "remote_vteps": VTEPS_HER,
    }
    return _family("tomahawk", "Tomahawk/Tomahawk+", default, {
        "lpm-heavy": {"ipv4_routes": _published(128 * K, "Tomahawk lpm-heavy, IPv4 LPM 128k")},
    })


def _trident(asic: str, label: str) -> dict[str, Profile]:
    v4 = _published(128 * K, "Trident II/II+/3 (ALPM), IPv4 LPM 128k")
    default: dict[Resource, Capacity] = {
        "ipv4_routes": v4,
        "ipv6_routes": _half_v4(v4, label),
        "nexthops": NEXTHOPS_ESTIMATE,
        "nexthop_groups": NEXTHOP_GROUPS_ESTIMATE,
        "neighbors": NEIGHBORS_ESTIMATE,
        "fdb_entries": _published(32 * K, "Trident II/II+/3 default, MAC 32k"),
        "remote_vteps": VTEPS_HER,
    }
    return _family(asic, label, default, {
        "l2-heavy": {"fdb_entries": _published(160 * K, "Trident II/II+/3 l2-heavy, MAC 160k")},
    })


def _build() -> dict[str, Profile]:
    profiles = {"generic": _generic()}
    profiles.update(_spectrum1())
    profiles.update(_spectrum23("spectrum-2", "Spectrum-2"))
    profiles.update(_spectrum23("spectrum-3", "Spectrum-3"))
    profiles.update(_tomahawk())
    profiles.update(_trident("trident2", "Trident II"))
    profiles.update(_trident("trident2+", "Trident II+"))
    profiles.update(_trident("trident3", "Trident 3"))
    return profiles


PROFILES: Mapping[str, Profile] = MappingProxyType(_build())
# Other spellings people use for the same silicon.
ALIASES: Mapping[str, str] = MappingProxyType({"tomahawk+": "tomahawk"})


def get_profile(name: str) -> Profile:
    """The built-in profile `name` (case-insensitive, `<asic>/default` = `<asic>`), or
    UnknownProfileError listing every known name."""
    key = name.strip().lower().removesuffix("/default")
    asic, sep, variant = key.partition("/")
    key = ALIASES.get(asic, asic) + sep + variant
    try:
        return PROFILES[key]
    except KeyError:
        raise UnknownProfileError(
            f"unknown headroom profile {name!r}; known profiles: {', '.join(PROFILES)}"
        ) from None


def capacity_for(
    profile_name: str,
    overrides: Mapping[str, int] | None = None,
    discovered: Mapping[Resource, Capacity] | None = None,
) -> dict[Resource, Capacity]:
    """Capacity of every resource: the profile's figure, replaced by what the device itself
    reports (`discovered`, e.g. devlink's exact per-table sizes) and, above both, by the
    config's `headroom.capacity` overrides (source "config"): the operator knows best."""
    caps: dict[Resource, Capacity] = dict(get_profile(profile_name).capacities)
    for resource, capacity in (discovered or {}).items():
        caps[check_resource(resource)] = capacity
    for resource, value in (overrides or {}).items():
        caps[check_resource(resource)] = Capacity(int(value), "config")
    return {r: caps[r] for r in RESOURCES}
