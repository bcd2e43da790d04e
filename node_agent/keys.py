"""The alliance key ceremony, run on the node side.

One CKKS key set is created for the alliance; the secret context goes to every node (node to
node, never through the coordinator); only the public context is published for the
coordinator. Run as `python -m node_agent.keys ...` so the secret key never lives in the
memory of the process that hosts the coordinator.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.files import write_secret
from common.he import CkksParams, create_secret_context, public_context_bytes, secret_context_bytes


def key_ceremony(node_secret_paths: list[Path], public_path: Path, params: CkksParams) -> None:
    """A new key set: each node's secret context written owner-only (0600) from its first byte
    (a fresh file replaces any older key; nothing is ever written then chmod-ed), and the
    public context for the coordinator."""
    ctx = create_secret_context(params)
    secret = secret_context_bytes(ctx)
    for path in node_secret_paths:
        write_secret(Path(path), secret)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_bytes(public_context_bytes(ctx))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--public", type=Path, required=True, help="where to publish the public context")
    parser.add_argument("--params", default=CkksParams().model_dump_json(), help="CkksParams as JSON")
    parser.add_argument("secrets", nargs="+", type=Path, help="each node's secret context path")
    args = parser.parse_args(argv)
    key_ceremony(args.secrets, args.public, CkksParams.model_validate_json(args.params))


if __name__ == "__main__":
    main()
