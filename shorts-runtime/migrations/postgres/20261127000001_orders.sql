-- One row per order, from the webhook to the callback the platform accepted.
CREATE TABLE shorts_orders (
    order_id     TEXT PRIMARY KEY,
    short        TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    callback_url TEXT NOT NULL,
    state        TEXT NOT NULL,
    runs         INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    fence        BIGINT NOT NULL DEFAULT 0,
    owner        TEXT,
    lease_until  BIGINT NOT NULL DEFAULT 0,
    next_at      BIGINT,
    result       BYTEA,
    last_error   TEXT,
    received_at  BIGINT NOT NULL,
    seq          BIGSERIAL NOT NULL
);

-- Orders that still need work, for claims.
CREATE INDEX shorts_orders_active ON shorts_orders (state, next_at)
    WHERE state IN ('received', 'delivering', 'paused');
CREATE INDEX shorts_orders_owner ON shorts_orders (owner) WHERE owner IS NOT NULL;
