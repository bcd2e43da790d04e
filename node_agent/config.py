"""A node's own configuration, kept in `<node dir>/node.json` on the branch's server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.customer_privacy import DEFAULT_DELTA, DEFAULT_EPSILON_PER_YEAR, ContributionBound
from node_agent.ledger import Budget


class NodeConfigError(ValueError):
    """The node's configuration file is missing or malformed."""


class TrustedApp(BaseModel):
    """A Flower app (FAB) this node agrees to run: its id, version and content hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fab_id: str = Field(min_length=1, description="publisher/name, as Flower names the app")
    fab_version: str = Field(min_length=1)
    fab_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the FAB file")


class JobLimits(BaseModel):
    """Per-job caps the node applies whatever the job asks for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rounds: int = Field(default=20, ge=1, le=500)
    max_epsilon: float = Field(default=10.0, gt=0, le=100, description="the largest target epsilon one job may plan")
    max_delta: float = Field(default=1e-4, gt=0, lt=1, description="the largest delta one job may ask for (checked before "
                             "any data is read, so a refusal says nothing about the branch's size)")
    max_new_jobs_per_day: int = Field(default=10, ge=1, le=10_000,
                                      description="jobs this node admits in any 24 hours: bounds probing by throw-away jobs")
    max_evaluations: int = Field(default=2, ge=0, le=100, description="held-out evaluations (and metric releases) per job")
    max_weight: int = Field(default=5_000, ge=1, description="the most training windows one node's update may weigh")
    max_epsilon_per_month: float | None = Field(
        default=None, gt=0, le=100,
        description="a standing rule: the most ε the jobs this node admits in any 30 days may plan together "
                    "(checked before any data is read; the dataset's total budget still applies)")


class SuperNodeSettings(BaseModel):
    """How `sovereign node run` starts this node's Flower SuperNode. Paths are relative to the
    node directory. There is no insecure mode: TLS to the SuperLink, the node's registered
    key, and a list of the app publishers it trusts are all required."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    superlink: str = Field(pattern=r"^[A-Za-z0-9_.:\[\]-]+:[0-9]{1,5}$", description="the SuperLink's Fleet API, host:port")
    root_certificates: Path = Field(description="the CA certificate the SuperLink's TLS certificate is checked against")
    auth_key: Path = Field(description="this node's private key (ECDSA P-384, OpenSSH), registered with the SuperLink")
    trusted_entities: Path = Field(description="YAML of the app publishers' Ed25519 keys; only bundles they signed run")
    runtime_port: int = Field(default=9094, ge=1, le=65535,
                              description="the port on 127.0.0.1 where the SuperNode serves its ClientApp processes")


class CustomerPrivacy(BaseModel):
    """Customer-level DP for everything this node releases (`common.customer_privacy`): the
    column that identifies a customer (read only as the policy's keyed hash, never sent), how
    much of one customer is counted, and the yearly budget every job's release is charged to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    customer_column: str = Field(default="customer_id", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
                                 description="the sales column naming the customer (the DMS customer number)")
    epsilon_per_year: float = Field(default=DEFAULT_EPSILON_PER_YEAR, gt=0, le=20,
                                    description="the most customer ε all jobs' releases may spend on any one year of sales")
    delta: float = Field(default=DEFAULT_DELTA, gt=0, le=1e-4, description="the δ every customer-level ε here is stated at")
    bound: ContributionBound = ContributionBound()
    first_month: str | None = Field(
        default=None, pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
        description="the first month the branch database holds complete sales (YYYY-MM, declared by branch IT): no "
                    "release starts earlier, so a release's months never depend on the data (default: the opening month)")


class NodeConfig(BaseModel):
    """The node's own truth. What a job claims (purpose, destination, recipient) is only a
    request: these settings decide."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    branch_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    db_url: str = Field(min_length=1, description="SQLAlchemy URL of the branch DMS database")
    dataset: str = "sales"
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$",
                                description="the branch's country: which shared seasonality the model applies to it")
    region: str | None = Field(default=None, max_length=64,
                               description="the branch's region: its trend in the model, and the released totals it counts toward")
    opened: str | None = Field(default=None, pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$",
                               description="the branch's opening month (YYYY-MM): how far into its ramp-up each month is")
    node_dir: Path
    policy_file: Path = Field(default=Path("policy.yaml"), description="the branch's policy, relative to node_dir")
    budgets: dict[str, Budget] = Field(default_factory=dict, description="total (epsilon, delta) each dataset may spend")
    accept_non_private_jobs: bool = Field(default=False, description="take jobs without DP (they spend no budget, protect nothing)")
    max_sale_price: float = Field(default=10_000_000, gt=0,
                                  description="the ceiling of a believable sale price in the branch's currency; above it a row is quarantined")
    require_he: bool = Field(default=True, description="refuse any job or model that is not CKKS-encrypted")
    coordinator_jurisdiction: str = Field(
        default="JP", pattern=r"^[A-Z]{2}$",
        description="ISO country of the coordinator: where results go, whatever a job claims as its destination",
    )
    accepted_purposes: list[str] = Field(default_factory=lambda: ["forecasting"], min_length=1)
    accepted_recipient_roles: list[str] = Field(default_factory=lambda: ["analyst"], min_length=1)
    min_mask_threshold: int = Field(default=2, ge=2, le=10_000,
                                    description="the fewest shares that may rebuild this node's mask seeds (CKKS-ring jobs): "
                                                "the coordinator with one node fewer learns nothing of this node's update")
    job_key_days: float = Field(default=30, gt=0, le=3650, description="a job's key is destroyed this many days after it "
                                "was made, whether or not the job said it ended")
    min_contributors: int = Field(default=3, ge=2, le=10_000,
                                  description="the fewest nodes an aggregate must sum before this node decrypts or releases it")
    limits: JobLimits = Field(default_factory=JobLimits)
    approvals: Literal["standing", "by_hand"] = Field(
        default="standing",
        description="standing: the rules above approve a job; by_hand: a job also needs the owner's "
                    "`sovereign node approve` of its exact spec. A denial by hand always stands.")
    trusted_apps: list[TrustedApp] = Field(
        default_factory=list,
        description="Flower apps this node runs under the deployment engine; empty refuses every deployed app",
    )
    supernode: SuperNodeSettings | None = Field(default=None, description="how `sovereign node run` starts the SuperNode")
    customer_privacy: CustomerPrivacy | None = Field(
        default=None, description="customer-level DP: when set, every job must ask for it and is held to its yearly budget")

    def customer_column_for(self, job) -> str | None:
        """The customer column a job reads here: only under customer-level privacy, to bound contributions."""
        return self.customer_privacy.customer_column if self.customer_privacy and job.customer_dp else None

    @property
    def lineage_url(self) -> str:
        return f"sqlite:///{(self.node_dir / 'lineage.db').resolve()}"

    @property
    def he_secret_path(self) -> Path:
        return self.node_dir / "he" / "secret.ctx"

    @property
    def privacy_dir(self) -> Path:
        return self.node_dir / "privacy"

    @property
    def ledger_url(self) -> str:
        return f"sqlite:///{(self.privacy_dir / 'ledger.db').resolve()}"

    @property
    def policy_path(self) -> Path:
        return self.node_dir / self.policy_file

    @property
    def lineage_key_dir(self) -> Path:
        """Where the node's Ed25519 lineage signing key lives (its public half beside it)."""
        return self.node_dir / "keys"

    @property
    def peer_keys_dir(self) -> Path:
        """The other branches' lineage public keys, `<branch>.pub`, exchanged node to node: what
        this node checks forwarded contributions against (never keys from the coordinator)."""
        return self.node_dir / "peers"

    @property
    def policy_key_path(self) -> Path:
        """The node-held key of the policy's keyed-hash treatment; it never leaves the node."""
        return self.node_dir / "keys" / "policy-hmac.key"


def write_node_config(config: NodeConfig) -> Path:
    config.node_dir.mkdir(parents=True, exist_ok=True)
    path = config.node_dir / "node.json"
    path.write_text(config.model_dump_json(indent=2))
    return path


def load_node_config(node_dir: Path) -> NodeConfig:
    path = Path(node_dir) / "node.json"
    try:
        data = json.loads(path.read_text())
        return NodeConfig.model_validate({**data, "node_dir": str(Path(node_dir))})
    except FileNotFoundError:
        raise NodeConfigError(f"{path}: no node configuration here") from None
    except json.JSONDecodeError as exc:
        raise NodeConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise NodeConfigError(f"{path}: field '{loc}': {err['msg']}") from None
