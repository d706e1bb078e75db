#!lua flags=allow-oom
-- Record the outcome of a request's item that never became a job (an answer from the
-- cache, or a refusal before queueing); the one that completes the request tells its bot,
-- as a settled job's would (lib.lua request_outcome). Allowed when Redis is full: a
-- request must still end in its answer.
-- ARGV: prefix, request_id, index, result_json, retention_ms
-- Returns 1 if recorded, 0 if the item had an outcome already or the record is gone.
return request_outcome(ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]))
