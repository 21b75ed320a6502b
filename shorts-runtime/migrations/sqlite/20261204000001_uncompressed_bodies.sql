-- PostgreSQL's bodies stop being compressed in this version; SQLite never compresses them, and
-- keeps callback bodies over 64 KiB in files of their own. Nothing to change.
SELECT 1;
