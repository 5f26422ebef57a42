"""A deployed device as a :class:`~fedrec.client.node.Node`: its CSV, its encrypted state.

The node config names the device's ``data-file`` and ``state-dir``. Its users are its
CSV's users, read against the item catalogue that the server sends with every
instruction (:mod:`fedrec.client.local_data`); their local parameters, accountant
histories and the last global model are loaded from the encrypted state directory before
the handler and written back after it (:mod:`fedrec.client.device_state`), so a restarted
device continues where it stopped. With its SuperNode key it countersigns the ledger row
of each of its releases, so that the server cannot rewrite what the device spent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, RecordDict

from fedrec.client.device_state import DeviceState, load_state, locked, save_state
from fedrec.client.local_data import LocalData, load_local_data
from fedrec.client.model_arrays import received_arrays
from fedrec.client.node import Node, server_round
from fedrec.client.privacy_state import PrivacyHistoryStore
from fedrec.client.state import UserVectorStore
from fedrec.core.config.run_config import RunConfig
from fedrec.core.data.catalogue import catalogue_digest
from fedrec.core.models.registry import MODELS, needs_item_features
from fedrec.core.privacy import plan
from fedrec.core.privacy.signing import release_statement, sign_release
from fedrec.protocol.wire import (
    CATALOGUE,
    CONFIG,
    LEDGER_RUN_ID,
    NODE_AUTH_KEY,
    NODE_DATA_FILE,
    NODE_DEVICE,
    NODE_STATE_DIR,
)


@dataclass(frozen=True)
class DeployedDevice(Node):
    """A device's side of a round: its data over the catalogue and its decrypted state."""

    state_dir: Path = Path()
    data_file: Path = Path()
    local: LocalData | None = None
    catalogue: tuple[str, ...] = ()
    saved: DeviceState | None = None
    auth_key: Path | None = None  # the SuperNode key, which countersigns this device's ledger rows
    node_id: int = 0

    @property
    def deployed(self) -> bool:
        return True

    @classmethod
    def open(cls, msg: Message, context: Context, config: RunConfig) -> "DeployedDevice":
        """Load the device's CSV over the server's catalogue and its encrypted state."""
        if needs_item_features(config.model):
            raise ValueError(f"model {config.model} cannot run on a deployed device: it reads item features, "
                             "and a device gets only the item catalogue (shipping features to devices is "
                             f"future work); deploy one of {', '.join(sorted(MODELS))}")
        node_config = context.node_config
        instruction = msg.content.config_records.get(CONFIG)
        catalogue = instruction.get(CATALOGUE) if instruction is not None else None
        if not isinstance(catalogue, list) or not catalogue:
            raise ValueError(f"a deployed device needs the item catalogue ({CATALOGUE!r}) in the instruction")
        catalogue = tuple(str(item) for item in catalogue)
        device = str(node_config.get(NODE_DEVICE, "")) or config.device
        config = replace(config, device=device)
        local = load_local_data(str(node_config[NODE_DATA_FILE]), catalogue, config.seed, config.eval_negatives)
        if config.dp in ("user-central", "user-distributed") and local.split.n_users > 1:
            raise ValueError(f"dp {config.dp} samples devices as users, but this device holds "
                             f"{local.split.n_users} users: run one user per device")
        arrays = received_arrays(msg, config, len(catalogue))
        state_dir = Path(str(node_config[NODE_STATE_DIR])).expanduser()
        with locked(state_dir):
            saved = load_state(state_dir)
        state = RecordDict()
        vectors, histories = UserVectorStore(state), PrivacyHistoryStore(state)
        same_model = _model_key(saved.meta) == (config.model, config.dim, catalogue_digest(catalogue))
        for index, raw_user in enumerate(local.user_ids):
            if same_model and raw_user in saved.vectors:  # a vector of another model/catalogue is useless
                vectors.save(index, saved.vectors[raw_user])
            if saved.histories.get(raw_user):  # ε spent is never forgotten, whatever the model
                histories.save(index, saved.histories[raw_user])
        data_file = Path(str(node_config[NODE_DATA_FILE])).expanduser().resolve()
        auth_key = Path(str(node_config[NODE_AUTH_KEY])).expanduser() if NODE_AUTH_KEY in node_config else None
        return cls(config, local.split, arrays, vectors, state, state_dir, data_file, local, catalogue, saved,
                   auth_key, int(context.node_id))

    def users_this_round(self, msg: Message) -> list[int]:
        """Every user of the device's CSV."""
        return list(range(self.split.n_users))

    def persist(self, round_: int) -> None:
        """Write the users' vectors and histories and this global model back, encrypted."""
        assert self.local is not None
        vectors, histories = UserVectorStore(self.state), PrivacyHistoryStore(self.state)
        with locked(self.state_dir):
            current = load_state(self.state_dir)  # re-read: keep what another writer added
            if _model_key(current.meta) != (self.config.model, self.config.dim, catalogue_digest(self.catalogue)):
                current.vectors = {}  # another model's vectors cannot be used with this one
            for index, raw_user in enumerate(self.local.user_ids):
                local = vectors.load(index)
                if local is not None:
                    current.vectors[raw_user] = local
                history = histories.load(index)
                if history:
                    current.histories[raw_user] = history
            current.global_model = {k: np.asarray(v, dtype=np.float32) for k, v in self.global_arrays.items()}
            current.meta.update({
                "model": self.config.model, "dim": self.config.dim, "seed": self.config.seed,
                "catalogue": list(self.catalogue), "catalogue_sha256": catalogue_digest(self.catalogue),
                "server_round": round_, "data_file": str(self.data_file),
                "run_config": self.config.to_user_config(),
            })
            save_state(self.state_dir, current)

    def countersignatures(self, msg: Message, releases: list, release: str) -> list[str] | None:
        """The device's signature of each release's ledger row ("" for a refusal), with its
        SuperNode key (``fedrec audit --device-keys`` checks them); ``None`` without a key or
        when the server names no ledger run."""
        instruction = msg.content.config_records.get(CONFIG)
        run_id = instruction.get(LEDGER_RUN_ID) if instruction is not None else None
        if self.auth_key is None or not isinstance(run_id, str) or not run_id:
            return None
        relation = plan.RELATION[self.config.dp]
        signatures = []
        for r in releases:
            if r.refused:
                signatures.append("")
                continue
            statement = release_statement(run_id, server_round(msg), f"client:node-{self.node_id}/user-{r.user}",
                                          relation, r.noise_multiplier, r.sample_rate, r.steps, r.epsilon, release)
            signatures.append(sign_release(self.auth_key, statement))
        return signatures


def _model_key(meta: dict) -> tuple:
    """What a stored user vector is only valid for: the model, its dimension and the catalogue."""
    return meta.get("model"), meta.get("dim"), meta.get("catalogue_sha256")
