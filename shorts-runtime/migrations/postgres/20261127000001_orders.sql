-- One row per order, from the webhook to the callback the platform accepted. The webhook body and
-- the callback body live in tables of their own, so that the frequent updates of an order's state
-- never copy them.
CREATE TABLE shorts_orders (
    order_id     TEXT PRIMARY KEY,
    short        TEXT NOT NULL,
    callback_url TEXT NOT NULL,
    state        TEXT NOT NULL,
    runs         INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    fence        BIGINT NOT NULL DEFAULT 0,
    owner        TEXT,
    lease_until  BIGINT NOT NULL DEFAULT 0,
    next_at      BIGINT,
    last_error   TEXT,
    received_at  BIGINT NOT NULL,
    seq          BIGSERIAL NOT NULL
);

-- Orders that still need work, for claims.
CREATE INDEX shorts_orders_active ON shorts_orders (state, next_at)
    WHERE state IN ('received', 'delivering', 'paused');
CREATE INDEX shorts_orders_owner ON shorts_orders (owner) WHERE owner IS NOT NULL;

-- The webhook body as received.
CREATE TABLE shorts_payloads (
    order_id TEXT PRIMARY KEY,
    payload  BYTEA NOT NULL
);

-- The callback body, committed before the first POST.
CREATE TABLE shorts_results (
    order_id TEXT PRIMARY KEY,
    body     BYTEA NOT NULL
);
