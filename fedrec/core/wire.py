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
USERS_RECONSTRUCTED = "users-reconstructed"
SERVER_ROUND = "server-round"
SAMPLED_USERS = "sampled-users"  # cohort executor: the users the server sampled this round

USER_STATE_PREFIX = "fedrec.user."  # context.state key of one user's local parameters
