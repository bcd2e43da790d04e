"""What CKKS costs per round, against plaintext updates, measured in one run.

For the demo's model size and N nodes: bytes each node uploads, the time to encrypt, to sum
at the coordinator, and to decrypt, with and without encryption. Reports ratios (this
machine is shared; absolute times drift, ratios measured side by side much less).
Writes experiments/results/he_overhead.json.

    .venv/bin/python experiments/he_overhead.py --nodes 20 127
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common.he import CkksParams, create_secret_context, decrypt_vector, encrypt_vector, load_context, public_context_bytes, sum_encrypted
from common.model import build_model, get_flat_weights
from common.wire import UpdatePayload

HERE = Path(__file__).resolve().parent


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(nodes: int, params: CkksParams) -> dict:
    secret = create_secret_context(params)
    public = load_context(public_context_bytes(secret))
    weights = get_flat_weights(build_model(0))
    rng = np.random.default_rng(0)
    updates = [np.concatenate([weights * n + rng.normal(0, 0.01, weights.size), [n]]) for n in rng.integers(5, 80, nodes)]
    encrypted = [encrypt_vector(secret, u) for u in updates]
    plain = [UpdatePayload.plain(u) for u in updates]
    t_enc = best_of(lambda: encrypt_vector(secret, updates[0]))
    t_plain_enc = best_of(lambda: UpdatePayload.plain(updates[0]))
    t_sum = best_of(lambda: sum_encrypted(public, encrypted), repeat=2)
    t_plain_sum = best_of(lambda: np.sum([p.plain_values() for p in plain], axis=0))
    summed = sum_encrypted(public, encrypted)
    t_dec = best_of(lambda: decrypt_vector(secret, summed))
    err = float(np.max(np.abs(decrypt_vector(secret, summed) - np.sum(updates, axis=0))))
    return {
        "nodes": nodes,
        "parameters": int(weights.size),
        "ciphertexts_per_update": len(encrypted[0].chunks),
        "bytes_per_update": {"ckks": encrypted[0].nbytes(), "plain": plain[0].nbytes()},
        "bytes_ratio": round(encrypted[0].nbytes() / plain[0].nbytes(), 1),
        "seconds": {
            "encrypt_one_update": round(t_enc, 5), "plain_pack_one_update": round(t_plain_enc, 6),
            "coordinator_sum": round(t_sum, 4), "plain_sum": round(t_plain_sum, 5),
            "decrypt_sum": round(t_dec, 5),
        },
        "coordinator_sum_ratio": round(t_sum / max(t_plain_sum, 1e-9), 1),
        "max_abs_error_of_sum": err,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[20, 127])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "he_overhead.json")
    args = parser.parse_args()
    params = CkksParams()
    report = {"benchmark": "he_overhead", "params": params.model_dump(mode="json"), "results": [measure(n, params) for n in args.nodes]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
