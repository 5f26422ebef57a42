"""Names that travel between processes: record keys in messages and state.

Both the ClientApp and the ServerApp import these; no string literal appears on
both sides of the wire.
"""

ARRAYS = "arrays"  # ArrayRecord: global model (down) or update of the global part (up)
CONFIG = "config"  # ConfigRecord sent with an instruction
METRICS = "metrics"  # MetricRecord in replies

NUM_EXAMPLES = "num-examples"  # weight of a reply in aggregation
TRAIN_LOSS = "train-loss"
USERS_TRAINED = "users-trained"
NODE_SECONDS = "node-seconds"  # a node's compute time for the instruction (overhead diagnostics)
USERS_EVALUATED = "users-evaluated"
# Under a DP mode an evaluation reply's METRICS hold, at the keys of
# fedrec.core.privacy.plan.private_metric_keys, the *sum* over the node's evaluated users of
# their metric vectors (noised per user for record/user-local, exact for user-central, which
# the server noises), and USERS_EVALUATED their number; nothing else (no node-seconds, no
# users-reconstructed, no num-examples). record/user-local add a PRIVACY report
# (PRIVACY_RELEASE = RELEASE_EVALUATE).
USERS_RECONSTRUCTED = "users-reconstructed"
SERVER_ROUND = "server-round"
SAMPLED_USERS = "sampled-users"  # cohort executor: the users the server sampled this round

USER_STATE_PREFIX = "fedrec.user."  # context.state key of one user's local parameters

# Under a DP mode a train reply carries a ConfigRecord PRIVACY with one entry per user
# that was due to train: parallel lists under these keys (refused: 1 if its budget was spent).
PRIVACY = "privacy"
PRIVACY_USERS = "users"
PRIVACY_REFUSED = "refused"
PRIVACY_NOISE = "noise-multiplier"
PRIVACY_RATE = "sample-rate"
PRIVACY_STEPS = "steps"
PRIVACY_EPSILON = "epsilon"
PRIVACY_RELEASE = "release"  # which release the report is about: RELEASE_TRAIN or RELEASE_EVALUATE
RELEASE_TRAIN = "train"
RELEASE_EVALUATE = "evaluate"
PRIVACY_STATE_PREFIX = "fedrec.privacy."  # context.state key of one user's accountant history
DP_CLIP = "dp-clip"  # user-central with adaptive clipping: this round's clip norm (server → client)
DP_WITHIN_CLIP = "dp-within-clip"  # user-central: users of the reply whose ‖Δ‖ ≤ C (adaptive clipping's bits)

# Deployment: the item catalogue (raw item ids in item-row order) sent with every
# instruction, and the node-config keys `fedrec client start` gives its SuperNode.
CATALOGUE = "catalogue"
NODE_DATA_FILE = "data-file"
NODE_STATE_DIR = "state-dir"
NODE_DEVICE = "device"
# the device's SuperNode private key (OpenSSH ECDSA), with which it countersigns the ledger
# rows about its own releases; the server names the ledger's run id in every DP instruction
NODE_AUTH_KEY = "auth-key"
LEDGER_RUN_ID = "ledger-run-id"
# with each privacy report a deployed device sends one signature per release ("" for a
# refusal): ECDSA-SHA384 over fedrec.core.privacy.signing.release_statement of the row
PRIVACY_SIGNATURES = "device-signatures"
# Deployed devices keep each user's accountant across runs and server restarts, so a user's
# history may hold releases this run's ledger never saw (an earlier run; a round the server
# lost). With each release a device reports the user's history *before* it: per user the
# number of (σ, q, steps) runs, and the runs themselves concatenated in three flat lists.
PRIVACY_PRIOR_RUNS = "prior-runs"
PRIVACY_PRIOR_NOISE = "prior-noise-multiplier"
PRIVACY_PRIOR_RATE = "prior-sample-rate"
PRIVACY_PRIOR_STEPS = "prior-steps"
