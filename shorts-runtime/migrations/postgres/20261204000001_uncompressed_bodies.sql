-- Webhook and callback bodies are kept out of line but not compressed: they are mostly base64
-- (files) and JSON, which PostgreSQL's pglz barely shrinks, at about 20 ms of the server's CPU per
-- megabyte. Rows written before keep their compression.
ALTER TABLE shorts_results ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE shorts_payloads ALTER COLUMN payload SET STORAGE EXTERNAL;
