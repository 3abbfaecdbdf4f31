-- hsdal schema, migration 4: no global index on room_events.stream_ordering.
--
-- Every read of room_events is within one room, ordered by stream_ordering, and served by
-- room_events_room_stream_idx (room_id, stream_ordering) WHERE deleted_at IS NULL. The
-- unique constraint on stream_ordering alone gave the planner a second way to produce that
-- order: scan the global index backwards and filter by room. For a room whose history is
-- old (a big room that went quiet while others kept talking) that walks every newer event
-- of every other room before the first row of the page — measured 8.3 ms vs 0.18 ms for a
-- live-edge page of a 100 000-event room with 60 000 newer events elsewhere, and 60-70 ms
-- p50 under load in the benchmark's paging-depth-0 scenario. Uniqueness of stream_ordering
-- is guaranteed by its sequence (nextval never repeats), so the index guarded nothing else.
ALTER TABLE room_events DROP CONSTRAINT room_events_stream_ordering_key;

---- create above / drop below ----

ALTER TABLE room_events ADD CONSTRAINT room_events_stream_ordering_key UNIQUE (stream_ordering);
