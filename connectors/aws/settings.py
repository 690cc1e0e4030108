"""The AWS site's `connector:` settings, validated into one small model.

Credentials are referenced, never written in the file: a named profile (`profile`), a role to
assume from the default chain (`role_arn`), or nothing (the default chain: environment, shared
files, SSO, instance or task role). Inline keys are refused with an error that names the field
but never repeats its value; every validation error is rebuilt from field paths and messages
only, because pydantic's own error text echoes the rejected input.

A named profile may itself assume a role (`role_arn` + `source_profile` in the AWS config
file), so `profile` and `role_arn` are exclusive here rather than combined.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.domain.errors import ConfigError
from connectors.settings import SiteSettings

DEFAULT_PRICE_CATALOG = Path(__file__).resolve().parent / "data" / "prices.csv"

# Field names people paste credentials under (boto3 arguments, the shared-file keys, env names).
INLINE_CREDENTIAL_FIELDS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "access_key_id",
        "secret_access_key",
        "access_key",
        "secret_key",
        "session_token",
        "token",
    }
)

_ZONE = r"^[a-z]{2}(-[a-z]+)+-\d+[a-z](-[a-z0-9-]+)?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LaunchTemplateRef(_Strict):
    """An EC2 launch template, by name or id, and the version to launch."""

    name: Annotated[str, Field(min_length=3, max_length=128)] | None = None
    id: Annotated[str, Field(pattern=r"^lt-[0-9a-f]{8,17}$")] | None = None
    # "$Default", "$Latest" or a version number, as RunInstances' LaunchTemplate.Version takes.
    version: Annotated[str, Field(pattern=r"^(\$Default|\$Latest|[1-9][0-9]*)$")] = "$Default"

    @model_validator(mode="after")
    def _one_reference(self) -> LaunchTemplateRef:
        if (self.name is None) == (self.id is None):
            raise ValueError("give exactly one of launch_template.name and launch_template.id")
        return self

    def as_request(self) -> dict[str, str]:
        """The RunInstances `LaunchTemplate` parameter."""
        key = "LaunchTemplateName" if self.name is not None else "LaunchTemplateId"
        return {key: self.name or self.id or "", "Version": self.version}


class AwsSettings(_Strict):
    """One AWS region site. Relative paths resolve against the config file's folder."""

    # The EC2 region; default: the site's `region`.
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$")] | None = None
    # Availability zones to try, in order; default: every zone offering the type, by name.
    zones: tuple[Annotated[str, Field(pattern=_ZONE)], ...] = ()
    # A named profile from the shared AWS config/credentials files.
    profile: Annotated[str, Field(min_length=1)] | None = None
    # A role to assume through STS, starting from the default credential chain.
    role_arn: (
        Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")] | None
    ) = None
    # The external id the role's trust policy demands (third-party access), if any.
    external_id: Annotated[str, Field(min_length=2, max_length=1224)] | None = None
    # The STS session name; shows in CloudTrail as the role session.
    session_name: Annotated[str, Field(pattern=r"^[\w+=,.@-]{2,64}$")] = "gpu-broker"
    # Another endpoint for EC2 and STS (VPC endpoints in production, moto in tests).
    endpoint_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    # Only these instance types become pools; default: every GPU type the region offers.
    instance_types: tuple[Annotated[str, Field(pattern=r"^[a-z0-9-]+\.[a-z0-9-]+$")], ...] = ()
    # Nodes each instance-type pool reports: how many instances the broker may run of it.
    max_nodes: Annotated[int, Field(gt=0, le=10_000)] = 16
    # Launch from this template (AMI, user data, network, IAM profile inside it) ...
    launch_template: LaunchTemplateRef | None = None
    # ... or from this AMI with this user-data file (read at each provision).
    image_id: Annotated[str, Field(pattern=r"^ami-[0-9a-f]{8,17}$")] | None = None
    user_data_file: Annotated[str, Field(min_length=1)] | None = None
    # Zone -> subnet to launch into; when given, only zones listed here are tried.
    subnet_ids: dict[
        Annotated[str, Field(pattern=_ZONE)], Annotated[str, Field(pattern=r"^subnet-[0-9a-f]+$")]
    ] = Field(default_factory=dict)
    security_group_ids: tuple[Annotated[str, Field(pattern=r"^sg-[0-9a-f]+$")], ...] = ()
    # A price CSV in the shipped catalog's format; default: connectors/aws/data/prices.csv.
    price_catalog: Annotated[str, Field(min_length=1)] | None = None
    # Value of the `gpu-broker:owner` tag: instances without it are never touched.
    owner: Annotated[str, Field(pattern=r"^[\w .:/=+@-]{1,128}$")] = "gpu-broker"

    @model_validator(mode="before")
    @classmethod
    def _no_inline_credentials(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            inline = sorted(INLINE_CREDENTIAL_FIELDS & set(map(str, data)))
            if inline:
                raise ValueError(
                    f"inline credentials ({', '.join(inline)}) are not accepted; "
                    "name a `profile`, a `role_arn`, or leave both out for the default chain"
                )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> AwsSettings:
        if self.profile is not None and self.role_arn is not None:
            raise ValueError("give `profile` or `role_arn`, not both (a profile may assume a role)")
        if self.role_arn is None and self.external_id is not None:
            raise ValueError("`external_id` needs `role_arn`")
        if (self.launch_template is None) == (self.image_id is None):
            raise ValueError("give exactly one of `launch_template` and `image_id`")
        if self.image_id is not None and self.user_data_file is None:
            raise ValueError(
                "`image_id` needs `user_data_file` (the script that joins the cluster)"
            )
        if self.launch_template is not None and self.user_data_file is not None:
            raise ValueError("`user_data_file` goes with `image_id`; a launch template has its own")
        if self.subnet_ids and self.zones:
            missing = [z for z in self.zones if z not in self.subnet_ids]
            if missing:
                raise ValueError(f"zones without a subnet in `subnet_ids`: {', '.join(missing)}")
        if len(set(self.zones)) != len(self.zones):
            raise ValueError("`zones` lists a zone twice")
        return self


def parse_settings(raw: Mapping[str, Any], *, site: SiteSettings) -> AwsSettings:
    """Validate a site's `connector:` mapping; raises `ConfigError` naming fields, never values."""
    try:
        parsed = AwsSettings.model_validate(dict(raw))
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(map(str, e['loc'])) or 'connector'}: {e['msg']}" for e in exc.errors()
        ]
        raise ConfigError(
            f"site {site.name}: invalid AWS connector settings:\n" + "\n".join(lines)
        ) from None
    region = parsed.region or site.region
    for zone in (*parsed.zones, *parsed.subnet_ids):
        if not zone.startswith(region):
            raise ConfigError(f"site {site.name}: zone {zone} is not in region {region}")
    return parsed


def catalog_path(parsed: AwsSettings, *, config_dir: Path) -> Path:
    """The price CSV: the configured one (relative to `config_dir`), else the shipped one."""
    if parsed.price_catalog is None:
        return DEFAULT_PRICE_CATALOG
    return config_dir / parsed.price_catalog  # an absolute path stays as it is


def user_data_path(parsed: AwsSettings, *, config_dir: Path) -> Path | None:
    return None if parsed.user_data_file is None else config_dir / parsed.user_data_file
