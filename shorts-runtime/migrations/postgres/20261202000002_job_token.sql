-- Where the webhook body's `job_token` value sits in it (byte offset and length), until the
-- order's result is stored: the token, a bearer token for the buyer's Amazon account, is then
-- replaced by `null` in the stored body. NULL for orders without a token.
ALTER TABLE shorts_orders ADD COLUMN token_at BIGINT;
ALTER TABLE shorts_orders ADD COLUMN token_len BIGINT;
