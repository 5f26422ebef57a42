"""Seconds per round and bytes per client-round of a real deployment on this machine.

For each setting (``--clients`` devices × TLS with node authentication, or insecure) a
fresh server and that many SuperNodes are started on 127.0.0.1, a run of ``--rounds``
rounds is submitted, and everything is stopped. Reported per setting (from the run's
``metrics.jsonl``): the median ``wall_seconds`` of the training rounds after the first
(round 1 includes installing the FAB on every device), ``train_seconds``, the slowest
device's own compute (``node_seconds_max``), and payload bytes down/up per client-round
(the arrays and configs in the messages, as the ServerApp counts them; TLS and gRPC
framing come on top).

The last round also evaluates; ``training_round_seconds_median`` is the median over the
rounds after the first that do not (what a round costs between evaluations, which
``--eval-every`` spaces 5 rounds apart by default), ``evaluation_seconds_last_round`` the
evaluation exchange of the last round.

Settings run interleaved (TLS, insecure, TLS, …) so that load drifts hit both; ratios
TLS/insecure are taken within one invocation.

``--dp user-distributed`` measures the cost of secure aggregation instead: every setting is
TLS with node authentication, one user per device (SecAgg+ needs a device per user), and a
plain round (``dp off``) alternates with a ``user-distributed`` round (ε = 8, every device
in every round); the ratios user-distributed/plain of seconds per round and of bytes per
client-round (all four SecAgg+ stages included) are printed, with the median seconds of each
stage. ``--busy-poll`` lists the devices' poll intervals during a SecAgg+ round to compare
(:mod:`fedrec.client.supernode_process`; 3 is Flower's own interval). Under DP the
operational numbers are in ``server_internal.jsonl``, which this reads.

    python -m fedrec.simulations.benchmarks.deploy_rounds --clients 2 4 --rounds 4 --out D
    python -m fedrec.simulations.benchmarks.deploy_rounds --clients 8 --rounds 5 --dp user-distributed \
        --busy-poll 0.25 3 --out D
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from fedrec.client.round_in_progress import BUSY_POLL_S
from fedrec.client.supernode import start_client, stop_client
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.export import CATALOGUE_FILE, client_file, export_for_devices
from fedrec.core.data.loaders import load_dataset
from fedrec.core.run_files import read_jsonl
from fedrec.runtime.certs import add_client, init_certs
from fedrec.runtime.processes import free_listening_port
from fedrec.server.superlink import register_client, start_server, stop_server, submit_run


def run_setting(root: Path, data: Path, clients: int, tls: bool, rounds: int, executor: str,
                dp: str = "off", busy_poll: float = BUSY_POLL_S) -> dict:
    certs = root / "certs"
    ports = [free_listening_port() for _ in range(3)]
    server = root / "server"
    devices = [root / f"device{k}" for k in range(clients)]
    started = time.perf_counter()
    try:
        start_server(server, certs if tls else None, "127.0.0.1", *ports, insecure=not tls)
        for k, state in enumerate(devices):
            key = None
            if tls:
                keys = add_client(f"device{k}", certs)
                register_client(server, keys.public_key)
                key = keys.private_key
            start_client(f"127.0.0.1:{ports[0]}", certs / "ca.crt" if tls else None, key, client_file(data, k),
                         state, device="cpu", insecure=not tls, connect_wait_s=5 if not tls else 90,
                         busy_poll=busy_poll)
        run_dir = server / "runs" / "bench"
        config = RunConfig(dataset="deployment", catalogue=str(data / CATALOGUE_FILE), out_dir=str(run_dir),
                           rounds=rounds, eval_every=rounds + 1 if rounds > 1 else 1, checkpoint_every=rounds,
                           min_nodes=clients, round_timeout=300.0, executor=executor, dp=dp,
                           **({"epsilon": 8.0} if dp != "off" else {}))
        code = submit_run(server, config.to_user_config(), root / "run.log", timeout_s=1800)
        if code != 0:
            raise RuntimeError(f"run failed (flwr exit {code}); see {root / 'run.log'}")
        rows = operational_rows(run_dir)
    finally:
        for state in devices:
            stop_client(state, grace_s=5)
        stop_server(server, grace_s=5)
    later = [r for r in rows if r["round"] > 1] or rows
    training_only = [r for r in later if r["round"] < len(rows)] or later  # the last round also evaluates
    per_client = [r for r in rows if r["nodes"]]
    stages = sorted({stage for r in training_only for stage in r.get("secagg_seconds", {})})
    return {
        "clients": clients, "tls": tls, "dp": dp, "busy_poll": busy_poll, "rounds": len(rows),
        "round_seconds_median": statistics.median(r["wall_seconds"] for r in later),
        "training_round_seconds_median": statistics.median(r["wall_seconds"] for r in training_only),
        "evaluation_seconds_last_round": rows[-1]["wall_seconds"] - rows[-1]["train_seconds"],
        "stage_seconds_median": {stage: statistics.median(r["secagg_seconds"][stage] for r in training_only
                                                          if stage in r.get("secagg_seconds", {}))
                                 for stage in stages},
        "train_seconds_median": statistics.median(r["train_seconds"] for r in later),
        "node_seconds_max_median": statistics.median(r["node_seconds_max"] for r in later),
        "first_round_seconds": rows[0]["wall_seconds"],
        "bytes_down_per_client_round": statistics.mean(r["bytes_down"] / r["nodes"] for r in per_client),
        "bytes_up_per_client_round": statistics.mean(r["bytes_up"] / r["nodes"] for r in per_client),
        "setting_seconds": time.perf_counter() - started,
    }


def operational_rows(run_dir: Path) -> list[dict]:
    """Per round, the timings and byte counts: ``metrics.jsonl``, or under DP (where the shared
    file holds none) ``server_internal.jsonl``, keyed by round."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    internal = run_dir / "server_internal.jsonl"
    if internal.exists():
        extra = {r["round"]: r for r in read_jsonl(internal)}
        rows = [{**r, **extra.get(r["round"], {})} for r in rows]
    missing = [r["round"] for r in rows if "wall_seconds" not in r or "bytes_up" not in r]
    if missing:
        raise RuntimeError(f"rounds {missing} of {run_dir} have no timings or byte counts")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--devices-files", type=int, default=50, help="split the synthetic users into this many "
                        "device files (50: 20 users per device)")
    parser.add_argument("--executor", default="cohort", help="how each device trains its users")
    parser.add_argument("--dp", choices=["off", "user-distributed"], default="off",
                        help="user-distributed: plain vs SecAgg+ rounds (TLS, one user per device)")
    parser.add_argument("--busy-poll", type=float, nargs="+", default=[BUSY_POLL_S],
                        help="with --dp user-distributed: the devices' poll intervals (s) during a round to compare")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dp != "off":
        secure_aggregation_cost(args)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="fr-deploy-") as tmp:
        data = Path(tmp) / "data"
        export_for_devices(load_dataset("synthetic", "", 0), args.devices_files, data)
        for clients in args.clients:
            for tls in (True, False):
                root = Path(tmp) / f"c{clients}-{'tls' if tls else 'plain'}"
                root.mkdir()
                if tls:
                    init_certs(root / "certs", ["127.0.0.1", "localhost"])
                result = run_setting(root, data, clients, tls, args.rounds, args.executor)
                results.append(result)
                print(json.dumps(result), flush=True)
    for clients in args.clients:
        tls = next(r for r in results if r["clients"] == clients and r["tls"])
        plain = next(r for r in results if r["clients"] == clients and not r["tls"])
        print(f"{clients} devices: {tls['round_seconds_median']:.2f} s/round TLS+auth vs "
              f"{plain['round_seconds_median']:.2f} s insecure (ratio "
              f"{tls['round_seconds_median'] / plain['round_seconds_median']:.2f}); "
              f"{tls['bytes_down_per_client_round']:.0f} B down, {tls['bytes_up_per_client_round']:.0f} B up "
              "per client-round")
    (args.out / "deploy_rounds.json").write_text(json.dumps(results, indent=2))


def secure_aggregation_cost(args: argparse.Namespace) -> None:
    """Plain (dp off) vs user-distributed rounds on the same single-user devices over TLS."""
    results = []
    with tempfile.TemporaryDirectory(prefix="fr-deploy-") as tmp:
        data = Path(tmp) / "data"
        most = max(args.clients)
        export_for_devices(load_dataset(f"synthetic-{most}", "", 0), most, data)  # one user per device
        for clients in args.clients:
            settings = [("off", BUSY_POLL_S)] + [(args.dp, poll) for poll in args.busy_poll]
            for k, (dp, poll) in enumerate(settings):
                root = Path(tmp) / f"c{clients}-{k}-{dp}"
                root.mkdir()
                init_certs(root / "certs", ["127.0.0.1", "localhost"])
                result = run_setting(root, data, clients, True, args.rounds, "per-client", dp, poll)
                results.append(result)
                print(json.dumps(result), flush=True)
    for clients in args.clients:
        plain = next(r for r in results if r["clients"] == clients and r["dp"] == "off")
        bytes_plain = plain["bytes_down_per_client_round"] + plain["bytes_up_per_client_round"]
        for secure in (r for r in results if r["clients"] == clients and r["dp"] != "off"):
            bytes_secure = secure["bytes_down_per_client_round"] + secure["bytes_up_per_client_round"]
            print(f"{clients} devices (TLS + node auth, one user each), busy poll {secure['busy_poll']:g} s: "
                  f"training round {secure['training_round_seconds_median']:.2f} s {args.dp} vs "
                  f"{plain['training_round_seconds_median']:.2f} s plain (ratio "
                  f"{secure['training_round_seconds_median'] / plain['training_round_seconds_median']:.2f}); "
                  f"evaluation {secure['evaluation_seconds_last_round']:.2f} s vs "
                  f"{plain['evaluation_seconds_last_round']:.2f} s; stages "
                  + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in secure["stage_seconds_median"].items())
                  + f"; bytes per client-round {bytes_secure:.0f} vs {bytes_plain:.0f} (ratio "
                  f"{bytes_secure / bytes_plain:.2f}; up {secure['bytes_up_per_client_round']:.0f} vs "
                  f"{plain['bytes_up_per_client_round']:.0f})")
    (args.out / "deploy_rounds_secure_aggregation.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
