-- The server's clock, read on the node that holds the queue's keys (on a cluster, the
-- node of the prefix's slot: the one whose clock every other script reads).
-- ARGV: prefix. Returns {seconds, microseconds}.
return redis.call('TIME')
