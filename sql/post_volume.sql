-- skystream: posts per minute per language group into the lake (the dashboard's volume chart).
-- Parameters: kafka, posts_topic, lake (see sql/trends.sql).

CREATE TABLE posts (
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    connector = 'kafka',
    bootstrap_servers = '${kafka:127.0.0.1:9092}',
    topic = '${posts_topic:bluesky.posts}',
    format = 'jetstream',
    group_id = 'skystream-post-volume'
);

CREATE TABLE post_volume WITH (
    connector = 'lake', path = '${lake:lake}/post_volume', partition_by = 'hour'
);

INSERT INTO post_volume
SELECT win['start'] AS window_start, win['end'] AS window_end, lang, posts, authors
FROM (
    SELECT lang, count(*) AS posts, count(DISTINCT did) AS authors,
           tumble(INTERVAL '1' MINUTE) AS win
    FROM (
        SELECT did, coalesce(lower(split_part(langs[1], '-', 1)), 'und') AS lang, event_time
        FROM posts)
    GROUP BY lang, win);
