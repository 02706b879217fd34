"""The one transparency-log store (sequencer, group commit, Merkle nodes, proofs, signed checkpoints) that
keydir's key log and audit's log both run on; each service keeps only its own leaf rows."""
from .store import (
    Committed as Committed,
)
from .store import (
    GroupCommitter as GroupCommitter,
)
from .store import (
    LogStoreError as LogStoreError,
)
from .store import (
    LogTables as LogTables,
)
from .store import (
    Sequenced as Sequenced,
)
from .store import (
    SignedCheckpoint as SignedCheckpoint,
)
from .store import (
    TransparencyLogStore as TransparencyLogStore,
)
from .store import (
    bulk_insert as bulk_insert,
)
from .store import (
    read_nodes as read_nodes,
)
