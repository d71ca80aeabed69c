-- Work is woken in the process that adds it, and replicas poll for the rest (a replica
-- that died): the NOTIFY sent by every commit that touched the outbox or a deadline woke
-- every replica for work only one can take, and serialised those commits on the
-- server's notification-queue lock.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP TRIGGER IF EXISTS deadlines_notify ON deadlines;
