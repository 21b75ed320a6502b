-- Claims take the orders that need work in the order they fell due: `COALESCE(next_at,
-- received_at)`, then arrival. Indexed in that order, a claim reads the few rows it takes (and the
-- leased ones before them) rather than sorting every waiting order, however long the backlog.
-- It replaces the index by state and `next_at`, which only claims used.
DROP INDEX shorts_orders_active;
CREATE INDEX shorts_orders_due ON shorts_orders ((COALESCE(next_at, received_at)), seq)
    WHERE state IN ('received', 'delivering', 'paused');
