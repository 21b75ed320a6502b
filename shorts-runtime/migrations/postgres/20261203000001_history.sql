-- What happened to an order, for operators: each run of the short (start, end, outcome), each
-- callback POST (time, status or transport error, what followed) and each operator action. Rows
-- are written by the statements that change the order, in the same transaction; an order keeps
-- its last 50 callback attempts, and its rows are deleted with it.
CREATE TABLE shorts_history (
    id        BIGSERIAL PRIMARY KEY,
    order_id  TEXT NOT NULL,
    -- 'run', 'callback' or 'operator'.
    kind      TEXT NOT NULL,
    -- The run's or the attempt's number, from 1; 0 for an operator action.
    number    INTEGER NOT NULL,
    -- When the run started, the POST was made, the operator acted (ms since the Unix epoch).
    at        BIGINT NOT NULL,
    -- When the run ended; NULL while it runs (or when the process ended with it).
    ended_at  BIGINT,
    -- A run: ok, error, panic, timeout, bad_input or interrupted; a callback: accepted, retry,
    -- dead, paused or replaced; an operator action: failed.
    outcome   TEXT,
    -- The HTTP status a callback POST got; NULL for a transport error.
    status    INTEGER,
    -- The error, the transport error, or the operator's message.
    detail    TEXT
);

CREATE INDEX shorts_history_order ON shorts_history (order_id, kind, number);
CREATE INDEX shorts_history_at ON shorts_history (kind, at);

-- The outcome of the order's last finished run (or `operator` once failed by hand), and the
-- index that orders the list of orders newest first.
ALTER TABLE shorts_orders ADD COLUMN outcome TEXT;
CREATE INDEX shorts_orders_received ON shorts_orders (received_at, order_id);
CREATE INDEX shorts_orders_state_received ON shorts_orders (state, received_at, order_id);
CREATE INDEX shorts_orders_short_received ON shorts_orders (short, received_at, order_id);
