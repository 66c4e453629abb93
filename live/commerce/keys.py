"""Key names of the live package in the datastore, in one place."""

from __future__ import annotations

PRODUCT = "nr:product:{sku}"  # hash: sku title category price (minor units) currency image
CATALOG = "nr:catalog"  # zset of skus, scored by insertion order
WORD = "nr:catalog:word:{word}"  # set of skus whose title has the word
STOCK = "nr:stock:{sku}"  # hash: location -> units on hand
STORES = "nr:stores"  # hash: store id -> json


def product(sku: str) -> str:
    return f"nr:product:{sku}"


def word(w: str) -> str:
    return f"nr:catalog:word:{w}"


def stock(sku: str) -> str:
    return f"nr:stock:{sku}"


FLASH_ACTIVE = "nr:flash:active"  # zset: session id -> ends_at of its running sale


def flash_key(session_id: str) -> str:
    return f"nr:flash:{session_id}"


def flash_bought_key(session_id: str) -> str:
    return f"nr:flash:{session_id}:bought"


def figures_key(session_id: str) -> str:
    return f"nr:figures:{session_id}"


def figures_orders_key(session_id: str) -> str:
    return f"nr:figures:{session_id}:orders_at"  # zset: order id -> created_at


def order_key(order_id: str) -> str:
    return f"nr:order:{order_id}"


ORDERS = "nr:orders"  # zset: order id -> created_at


# zset: order id -> when its purchase events were owed (the order, or the last claim of it).
# The order and this mark are written together; the mark goes once the events are in the
# event log, so an order answered by a process that stopped right after is still recorded.
UNRECORDED = "nr:orders:unrecorded"


def member_orders_key(member_id: str) -> str:
    return f"nr:orders:member:{member_id}"


IDEMPOTENCY_PREFIX = "nr:idem:"


def idempotency_key(user: str, key: str) -> str:
    return f"{IDEMPOTENCY_PREFIX}{user}:{key}"


def cart_key(user: str) -> str:
    return f"nr:cart:{user}"


WORDS = "nr:catalog:words"  # zset of every title word (score 0), for prefix lookups
REVISION = "nr:catalog:rev"  # counter moved by every product write: caches of products drop


def figure_hosts(session_id: str) -> str:
    return f"nr:figures:{session_id}:hosts"  # set: every host who ran a sale in the session


def figure_carts(session_id: str) -> str:
    return f"nr:figures:{session_id}:carts"  # set: users with a cart line from the session


def figure_skus(session_id: str) -> str:
    return f"nr:figures:{session_id}:skus"  # set: skus sold or carted in the session



# The version of the money layout the store holds ("1": integer minor units and a currency
# in products, flash sales and orders). Absent: a v0.1.0 store, or a new one (``migrate``).
MONEY_VERSION = "nr:schema:money"
