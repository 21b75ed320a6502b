-- `attempts` counts every callback POST made for an order; the position in the retry schedule,
-- which a 401 does not advance and a retry by hand starts over, moves to `steps`. Until now
-- `attempts` held that position.
ALTER TABLE shorts_orders ADD COLUMN steps INTEGER NOT NULL DEFAULT 0;
UPDATE shorts_orders SET steps = attempts;
