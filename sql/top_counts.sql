-- skystream: the naive ranking — the most frequent keywords of the last 5 minutes, each minute.
-- `skystream eval` sets it beside sql/trends.sql: frequent is not trending.
-- Same source and parameters as sql/trends.sql (kafka, posts_topic, lake, top).

CREATE TABLE posts (
    WATERMARK FOR event_time AS event_time - INTERVAL '5' SECOND
) WITH (
    connector = 'kafka',
    bootstrap_servers = '${kafka:127.0.0.1:9092}',
    topic = '${posts_topic:bluesky.posts}',
    format = 'jetstream',
    group_id = 'skystream-top-counts'
);

CREATE TABLE top_counts WITH (connector = 'lake', path = '${lake:lake}/top_counts', partition_by = 'day');

INSERT INTO top_counts
SELECT keyword, lang, window_end, n AS count, rank FROM (
    SELECT win['end'] AS window_end, lang, keyword, n,
           ROW_NUMBER() OVER (PARTITION BY win ORDER BY n DESC, keyword) AS rank
    FROM (
        SELECT lang, keyword, count(*) AS n, hop(INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS win
        FROM (SELECT coalesce(lower(split_part(langs[1], '-', 1)), 'und') AS lang,
                     unnest(keywords(text, langs)) AS keyword, event_time
              FROM posts)
        GROUP BY lang, keyword, win))
WHERE rank <= ${top:10};
