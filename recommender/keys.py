"""Key names of the recommender in the datastore, in one place."""

from __future__ import annotations

ALIASES = "nr:rec:alias"  # hash anon id -> member id
NOTICES = "nr:rec:notice"  # pub/sub: {"model": version} or {"erase": [ids]}
LOG = "nr:events"
USER_INDEX = "nr:rec:ev:{user}"  # list of the user's stream ids, oldest first
HISTORY = "nr:rec:hist:{user}"  # list of recent events, newest first: "sku\tkind\tts\tqty"
TRENDING = "nr:rec:trending"  # zset sku -> weight (cold start before any model)
ERASED = "nr:rec:erased"  # set of erased users' tags (``erased_tag``), never their ids
