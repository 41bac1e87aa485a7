"""Device and link profiles: sourced numbers in YAML, loaded into frozen, validated types."""

from device_profiles.catalog import (
    catalog_tables,
    devices,
    get_device,
    get_link,
    links,
    load_device,
    load_link,
)
from device_profiles.schema import DeviceProfile, LinkProfile, ProfileError

__all__ = [
    "DeviceProfile",
    "LinkProfile",
    "ProfileError",
    "catalog_tables",
    "devices",
    "get_device",
    "get_link",
    "links",
    "load_device",
    "load_link",
]
