"""Local safety ceilings: a root-owned, read-only file that no configuration, local or remote, can loosen.

    # /etc/iomt-gateway/safety.toml (root:root, 0644 or stricter)
    [gateway]
    min_config_signatures = 2        # distinct issuers a remote configuration needs, at least

    [device_class.insulin_pump]      # a device class is a device profile
    max_bolus_mu = 10000             # milli-units per bolus, at most
    max_basal_mu_per_h = 3000        # temporary basal rate, at most
    min_bolus_interval_s = 900       # between two boluses, at least
    max_daily_mu = 60000             # rolling 24 h, bolus + temporary basal, at most
    min_signatures = 2               # distinct issuers for a dose-changing command, at least

The configuration's per-device policy is clamped to the ceilings when commands are checked (the stricter
value wins), and a remote configuration that asks for more than a ceiling allows is refused with its reason
(`violations`).  The gateway runs as its own user under ProtectSystem=strict, so it cannot write the file;
the file must also be owned by root and writable by nobody else, or it is refused.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config import Config, DevicePolicy
from gateway.core.errors import ConfigError

DEFAULT_SAFETY_FILE = Path("/etc/iomt-gateway/safety.toml")
DOSE_CHANGING = frozenset({"bolus", "temp_basal"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ClassCeiling(_Strict):
    """The limits for one device class; a limit left out is not bounded by this file."""

    max_bolus_mu: Annotated[int, Field(ge=0, le=100_000)] | None = None
    max_basal_mu_per_h: Annotated[int, Field(ge=0, le=100_000)] | None = None
    min_bolus_interval_s: Annotated[int, Field(ge=0, le=86_400)] = 0
    max_daily_mu: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    min_signatures: Annotated[int, Field(ge=1, le=4)] = 1


class GatewayCeiling(_Strict):
    min_config_signatures: Annotated[int, Field(ge=1, le=4)] = 2


class _SafetyFile(_Strict):
    gateway: GatewayCeiling = GatewayCeiling()
    device_class: dict[str, ClassCeiling] = {}


# Without a safety file: what an insulin pump may never be asked for, whatever the configuration says.
BUILT_IN = {
    "insulin_pump": ClassCeiling(
        max_bolus_mu=25_000, max_basal_mu_per_h=5_000, min_bolus_interval_s=0, max_daily_mu=100_000
    )
}


@dataclass(frozen=True)
class SafetyCeilings:
    """The ceilings per device class (a device profile) and for remote configuration."""

    classes: Mapping[str, ClassCeiling] = field(default_factory=lambda: dict(BUILT_IN))
    min_config_signatures: int = 2
    source: str = "built-in"

    def clamp(self, policy: DevicePolicy, device_class: str | None) -> DevicePolicy:
        """The policy with every limit at most as loose as the ceiling of the device's class."""
        ceiling = self.classes.get(device_class or "")
        if ceiling is None:
            return policy
        dual = set(policy.dual_signature)
        if ceiling.min_signatures >= 2:
            dual |= DOSE_CHANGING & set(policy.allowed)
        return policy.model_copy(
            update={
                "max_bolus_mu": _lower(policy.max_bolus_mu, ceiling.max_bolus_mu),
                "max_basal_mu_per_h": _lower(policy.max_basal_mu_per_h, ceiling.max_basal_mu_per_h),
                "max_daily_mu": _lower(policy.max_daily_mu, ceiling.max_daily_mu),
                "min_bolus_interval_s": max(policy.min_bolus_interval_s, ceiling.min_bolus_interval_s),
                "dual_signature": tuple(sorted(dual)),
            }
        )

    def violations(self, config: Config) -> list[str]:
        """Each way `config` asks for more than the ceilings allow (empty when it stays inside them)."""
        out: list[str] = []
        if config.commands.config_signatures < self.min_config_signatures:
            out.append(f"commands.config_signatures below the local minimum of {self.min_config_signatures}")
        classes = {d.id: d.profile for d in config.devices}
        for policy in config.commands.devices:
            ceiling = self.classes.get(classes.get(policy.device, ""))
            if ceiling is None:
                continue
            name = f"commands.devices[{policy.device}]"
            for key, value, bound in (
                ("max_bolus_mu", policy.max_bolus_mu, ceiling.max_bolus_mu),
                ("max_basal_mu_per_h", policy.max_basal_mu_per_h, ceiling.max_basal_mu_per_h),
                ("max_daily_mu", policy.max_daily_mu, ceiling.max_daily_mu),
            ):
                if value is not None and bound is not None and value > bound:
                    out.append(f"{name}.{key} raises the local ceiling of {bound}")
            if policy.min_bolus_interval_s < ceiling.min_bolus_interval_s:
                out.append(f"{name}.min_bolus_interval_s lowers the local minimum of {ceiling.min_bolus_interval_s} s")
            unsigned = (DOSE_CHANGING & set(policy.allowed)) - set(policy.dual_signature)
            if ceiling.min_signatures >= 2 and unsigned:
                out.append(f"{name}.dual_signature must include {', '.join(sorted(unsigned))} (local minimum 2)")
        if not config.devices:
            out.append("it would remove every device")
        return out


def _lower(value: int | None, bound: int | None) -> int | None:
    if bound is None:
        return value
    return bound if value is None else min(value, bound)


def load_ceilings(path: Path = DEFAULT_SAFETY_FILE, *, check_owner: bool = True) -> SafetyCeilings:
    """Read the safety file; the built-in ceilings when there is none.  ConfigError when it is unsafe or invalid."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return SafetyCeilings()
    except OSError as err:
        raise ConfigError(f"safety file {path}: cannot read ({err.strerror})") from None
    if check_owner and (info.st_uid != 0 or info.st_mode & 0o022):
        raise ConfigError(
            f"safety file {path}: must be owned by root and writable by nobody else (chown root: ; chmod 0644)"
        )
    if check_owner and os.access(path, os.W_OK) and os.geteuid() != 0:
        raise ConfigError(f"safety file {path}: writable by the gateway's own user")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        parsed = _SafetyFile.model_validate(document)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"safety file {path}: not valid TOML ({type(err).__name__})") from None
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"safety file {path}: {where}: {first['msg']}") from None
    return SafetyCeilings(dict(parsed.device_class), parsed.gateway.min_config_signatures, str(path))
